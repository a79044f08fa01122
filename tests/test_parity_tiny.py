"""Parity with transformers on tiny random models of each architecture (fp32, CPU).

Three levels, after minGPT's checks: the logits agree to 1e-5, so greedy decoding picks the
same ids, so the decoded text is the same.
"""

import pytest
import torch

from minigemma import get_config
from minigemma.decoding.generate import generate_ids

from reference import hf_model, minigemma_from_hf, randomize_

ATOL = 1e-5
TINY = ["tiny-gemma", "tiny-gemma-mha", "tiny-gemma3"]


@pytest.fixture(scope="module", params=TINY)
def pair(request):
    config = get_config(request.param)
    torch.manual_seed(0)
    hf = hf_model(config)
    randomize_(hf)
    return config, hf, minigemma_from_hf(hf, config)


def test_logits_match(pair):
    config, hf, ours = pair
    # 40 tokens: longer than tiny-gemma3's sliding window of 8, so local layers really forget.
    ids = torch.randint(0, config.vocab_size, (2, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(ids).logits
        got = ours(ids)
    assert got.shape == expected.shape == (2, 40, config.vocab_size)
    torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


def test_greedy_ids_match(pair):
    config, hf, ours = pair
    prompt = [config.bos_id, 17, 99, 250, 3]
    with torch.no_grad():
        expected = hf.generate(torch.tensor([prompt]), max_new_tokens=30, do_sample=False,
                               eos_token_id=None, pad_token_id=config.pad_id)[0, len(prompt):].tolist()
    got = list(generate_ids(ours, prompt, max_new_tokens=30))
    assert got == expected


def test_greedy_text_matches(pair, tiny_tokenizer):
    config, hf, ours = pair
    prompt = "the tokenizer"
    ids = tiny_tokenizer.encode(prompt, add_bos=True)
    with torch.no_grad():
        out = hf.generate(torch.tensor([ids]), max_new_tokens=20, do_sample=False,
                          eos_token_id=None, pad_token_id=config.pad_id)[0, len(ids):].tolist()
    expected = tiny_tokenizer.decode(out)
    got = tiny_tokenizer.decode(list(generate_ids(ours, ids, max_new_tokens=20)))
    assert got == expected and len(got) > 0


def test_cached_decoding_matches_full_forward(pair):
    """Token-by-token logits through the KV cache equal one full pass, past the sliding window."""
    config, _, ours = pair
    ids = torch.randint(0, config.vocab_size, (1, 30), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = ours(ids)
        cache = ours.new_cache(batch=1, max_len=30)
        steps = [ours(ids[:, :5], cache=cache)]  # a short prefill, then one token at a time
        steps += [ours(ids[:, i:i + 1], cache=cache) for i in range(5, 30)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=ATOL, rtol=0)
    assert cache.length == 30
