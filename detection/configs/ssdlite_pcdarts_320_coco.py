# SSD at 320x320 on MS-COCO 2017 with the PC-DARTS ImageNet-searched backbone: the paper's
# detection transfer (method §7: about 28.9 AP, unconfirmed; backbone about 1.2 B FLOPs).
# Everything not set here is MMDetection's SSDLite-MobileNetV2 320x320 recipe, the mobile SSD
# the paper compares with: data pipeline (Expand, MinIoURandomCrop, photometric distortion),
# anchors, 120 epochs over a 5x repeated train2017, SGD lr 0.015 with cosine decay, batch 8 x 24.
# The `transfer_ssd` stage overrides data_root, classes, work_dir, the genotype and the
# pretrained weights, and the schedule knobs in params.yaml's `transfer_ssd` section.
_base_ = "mmdet::ssd/ssdlite_mobilenetv2-scratch_8xb24-600e_coco.py"

custom_imports = dict(imports=["detection"], allow_failed_imports=False)

input_size = 320  # method §7: SSD at 320x320 (the base recipe's pipelines use the same size)

model = dict(
    backbone=dict(
        _delete_=True,
        type="PCDARTSBackbone",
        genotype="pc_darts_imagenet",  # method §7: the ImageNet-searched cell
        C=48,  # method §6: the ImageNet mobile setting, C=48 ...
        layers=14,  # ... and 14 cells
        # The last cells at stride 16 and 32 (384 and 768 channels), the two maps
        # SSDLite takes from MobileNetV2; the neck adds four more, down to 1x1.
        out_indices=(8, 13),
        frozen_stages=-1,
        norm_eval=False,
    ),
    neck=dict(in_channels=(384, 768), out_channels=(384, 768, 512, 256, 256, 128)),
    bbox_head=dict(
        type="PredictableSSDHead",  # SSDHead, fixed for mmdetection#11780
        in_channels=(384, 768, 512, 256, 256, 128),
    ),
)
