"""Models the suite builds on: open_clip backbones by name, the embedded tiny CLIP and its
pre-training, and the contrastive loss every method trains with."""
