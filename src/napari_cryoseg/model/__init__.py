"""torch.nn models: the U-Net, its config and the self-describing model file."""
