"""sslboost: continued pre-training of self-supervised ResNets with entropy and rank criteria."""

__version__ = "0.1.0"
