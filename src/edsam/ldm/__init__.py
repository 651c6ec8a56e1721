"""Latent diffusion models: loading any diffusers text-to-image pipeline, and the tiny demo LDM."""
