"""Set prediction (DETR family): the Hungarian matcher and set loss, contrastive denoising,
multi-scale deformable attention, the decoder, RT-DETR's hybrid encoder and the
:class:`~scaledet.models.detr.head.RTDETRHead` that puts them together (preset ``rtdetr-n``)."""
