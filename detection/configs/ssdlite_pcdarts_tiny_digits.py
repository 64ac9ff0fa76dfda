# The tiny profile's SSD: the paper's model (ssdlite_pcdarts_320_coco.py) shrunk to the
# embedded COCO-format digits (128x128 canvases with 1-4 digits of 16-48 px, 10 classes)
# and to a couple of CPU minutes. Only sizes and the augmentation change: digits are not
# photographs (no photometric distortion), and a mirrored digit is another glyph (no flip).
_base_ = "./ssdlite_pcdarts_320_coco.py"

input_size = 128  # the canvases' side (data.embedded.coco_canvas_size): no resizing

model = dict(
    backbone=dict(
        C=12,  # the tiny profile's train_imagenet network (conf/profile/tiny.yaml)
        layers=6,
        out_indices=(1, 3, 5),  # the last cell at stride 8, 16 and 32: 48, 96, 192 channels
    ),
    neck=dict(
        in_channels=(48, 96, 192),
        out_channels=(48, 96, 192, 128),  # one extra level at stride 64 (2x2)
        level_strides=(2,),
        level_paddings=(1,),
    ),
    bbox_head=dict(
        in_channels=(48, 96, 192, 128),
        num_classes=10,  # the ten digits; the stage sets it from the data manifest
        anchor_generator=dict(
            strides=[8, 16, 32, 64],
            ratios=[[2], [2], [2], [2]],
            # Digit boxes are 6-48 px (tight boxes of 16-48 px pastes): one anchor scale
            # per level, from 12 px at stride 8 to 96 px at stride 64.
            min_sizes=[12, 24, 40, 64],
            max_sizes=[24, 40, 64, 96],
        ),
    ),
)

train_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(type="Resize", scale=(input_size, input_size), keep_ratio=False),
    dict(type="PackDetInputs"),
]
test_pipeline = [
    dict(type="LoadImageFromFile"),
    dict(type="Resize", scale=(input_size, input_size), keep_ratio=False),
    dict(type="LoadAnnotations", with_bbox=True),
    dict(
        type="PackDetInputs",
        meta_keys=("img_id", "img_path", "ori_shape", "img_shape", "scale_factor"),
    ),
]
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type="CocoDataset",
        ann_file="annotations/instances_train2017.json",
        data_prefix=dict(img="train2017/"),
        filter_cfg=dict(filter_empty_gt=True, min_size=32),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

# A few hundred iterations in all: a warm-up of 500 would never end.
param_scheduler = [
    dict(type="LinearLR", start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type="CosineAnnealingLR", begin=0, T_max=120, end=120, by_epoch=True, eta_min=0),
]
