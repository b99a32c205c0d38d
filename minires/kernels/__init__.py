"""Array-level kernels (no autograd): each CPU function beside its GPU twin, with a short dispatcher."""
