"""Models made or changed: the fit loop, training, fine-tuning and the checks around them."""
