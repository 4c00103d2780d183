"""Triton kernels of simvae_fast, installed as the subpackage simvae_fast.kernels."""
