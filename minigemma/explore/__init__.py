"""Looking inside the model: hooks and caches of activations, figures, and ipywidgets explorers."""
