"""From logits to text: sampling, the generation loop, the chat format, and compiling the decoding step."""
