"""Datasets (ImageFolder / ImageNet layout, built-in Fashion-MNIST, synthetic), label subsets and
the methods' augmentation pipelines. Import the submodules directly."""
