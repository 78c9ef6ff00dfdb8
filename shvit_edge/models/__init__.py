"""SHViT modules, the variant registry, checkpoint loading and reparameterization."""
