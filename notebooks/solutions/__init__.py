"""Solutions to the exercises at the end of each notebook; tests/test_exercises_NN.py runs them.

The file names start with the notebook number, which is not a valid identifier: import them with
`importlib.import_module("solutions.02_embeddings_and_rmsnorm")`.
"""
