"""The bundled proxy: a synthetic video task (``proxy``), a ViT trained on it (``assets/``), `sta demo` (``run``)."""
