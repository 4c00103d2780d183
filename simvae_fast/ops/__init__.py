"""torch.library custom ops over the kernels: forward, backward, fake (meta) and autograd registrations."""
