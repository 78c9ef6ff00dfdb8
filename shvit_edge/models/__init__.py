"""Model families (the registry, SHViT the first), their modules, checkpoint loading and reparameterization."""
