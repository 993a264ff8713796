"""Front doors: PyTorch, Keras/QKeras files and built-in names to the IR; built-in models and data sets."""
