"""The data layer, one concept per module: transforms, the CIFAR-10 / ImageNet / COCO
readers and checks, search splits, loaders, and :func:`~pcdarts.data.datasets.image_dataset`.

One code path for CIFAR-10 and ImageNet (method §5-6): the differences are the transforms
and the split function. Reading a dataset from a given path is the only I/O here; index
files are produced as JSON text (``indices_to_json``) and written by the stages.
"""
