"""Our VideoMAE ViT (release parameter names), its checkpoints, and conversion to and from Hugging Face."""
