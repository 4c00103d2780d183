"""The training application behind `simvae-fast`: data (IDX, CIFAR-10, CelebA), augmentations, networks (MLP,
ResNet), methods (SimVAE, VAE, SimCLR), the trainer, probes, evaluation and the command line."""
