"""The `scaledet` command line.

Every sub-command's arguments are declared here, in one place, so `scaledet --help` is the map of
the toolbox. Each handler (`scaledet.cli.train`, `.predict`, `.data`, `.evaluate`, `.info`)
turns the parsed arguments into typed settings once and calls the library; handler modules are
imported only when their command runs, so `--help` stays fast. No `argparse.Namespace` goes
below this package.

Errors a user can cause (bad path, malformed file, bad argument) are raised as `CLIError` or
`ValueError`/`FileNotFoundError` and printed as one line with a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence


class CLIError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and examples kept as written; every option's help ends with its default
    (as ``argparse.ArgumentDefaultsHelpFormatter`` does), except where the text already names
    it or there is none to name (``None``, a flag's ``False``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (not action.option_strings or default is None or default is False
                or default == argparse.SUPPRESS or "default" in text):
            return text
        return f"{text} (default: %(default)s)"


def _formatter(prog: str) -> argparse.HelpFormatter:
    return _HelpFormatter(prog, max_help_position=32)


def _add(sub, name: str, handler: str, help: str, examples: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, epilog="examples:\n" + examples,
                       formatter_class=_formatter)
    p.set_defaults(_handler=handler)
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scaledet", formatter_class=_formatter,
        description="scaledet: object detection in pure PyTorch, built around scale.",
        epilog="run `scaledet COMMAND --help` for the options and examples of each command",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # ---- evaluation ----------------------------------------------------------------------
    p = _add(sub, "eval", "scaledet.cli.evaluate:eval_command",
             "COCO bbox (or --iou-type keypoints: OKS) evaluation of a detections json against a "
             "ground-truth json, (--seg) semantic segmentation metrics of label PNG folders, or "
             "(--wider) the WIDER FACE easy / medium / hard AP",
             "  scaledet eval --gt annotations/instances_val.json --dt results.json\n"
             "  scaledet eval --gt gt.json --dt dt.json --json stats.json --plots pr_curves/\n"
             "  scaledet eval --gt person_keypoints_val.json --dt kps.json --iou-type keypoints\n"
             "  scaledet eval --gt hands.json --dt kps.json --iou-type keypoints "
             "--sigmas 0.025,0.025,0.035,0.035,0.079\n"
             "  scaledet eval --seg --gt masks/val --pred runs/seg_pred --num-classes 21\n"
             "  scaledet eval --wider --gt wider_face_split/wider_face_val_bbx_gt.txt "
             "--dt wider_pred/ --wider-lists eval_tools/ground_truth\n")
    p.add_argument("--gt", required=True,
                   help="COCO ground-truth json, or with --seg a folder of label PNGs, or with "
                        "--wider the WIDER FACE ground truth")
    p.add_argument("--dt", help="COCO results json (list of detections), or with --wider a "
                                "folder of event/name.txt detection files; required without --seg")
    p.add_argument("--json", dest="json_out",
                   help="write {stats, per_category} (--iou-type keypoints: also metrics by "
                        "name; with --seg: metrics, per-class IoU, problems) here")
    p.add_argument("--plots", help="folder for precision-recall curve PNGs")
    p.add_argument("--iou-type", choices=["bbox", "keypoints"], default="bbox",
                   help="bbox: the 12 COCO box stats; keypoints: the 10 OKS stats (AP, AP50, "
                        "AP75, AP_medium, AP_large, AR, ...) of results with 'keypoints', as "
                        "pycocotools' COCOeval(iouType='keypoints')")
    p.add_argument("--sigmas", metavar="S1,S2,...",
                   help="--iou-type keypoints: one OKS sigma per keypoint (default: the ground "
                        "truth category's 'sigmas', or COCO's for 17 keypoints)")
    p.add_argument("--seg", action="store_true",
                   help="semantic segmentation: PA, MPA, MIoU, FWIoU and per-class IoU of the "
                        "label PNGs in --pred against those in --gt, matched by file name "
                        "(pixel value = class id)")
    p.add_argument("--pred", metavar="DIR", help="--seg: folder of predicted label PNGs")
    p.add_argument("--num-classes", type=int, metavar="K", help="--seg: class ids are 0..K-1")
    p.add_argument("--ignore-index", type=int, default=255, metavar="V",
                   help="--seg: ground-truth value that is not counted (default 255)")
    p.add_argument("--wider", action="store_true",
                   help="WIDER FACE protocol: AP on the easy / medium / hard lists of the "
                        "detections in --dt (a folder of event/name.txt files) against --gt (a "
                        "wider_face_*_bbx_gt.txt, wider_face_val.mat, or a folder holding one)")
    p.add_argument("--wider-lists", metavar="DIR",
                   help="--wider: folder with the official wider_{easy,medium,hard}_val.mat "
                        "(default: --gt's folder when it holds them, else keep lists by face "
                        "size, which are not the official numbers)")

    # ---- data ----------------------------------------------------------------------------
    pd = sub.add_parser("data", help="dataset tools: synth, check, convert",
                        description="dataset tools: synth, check, convert")
    dsub = pd.add_subparsers(dest="data_command", metavar="DATA_COMMAND")
    p = _add(dsub, "synth", "scaledet.cli.data:synth_command",
             "write the built-in synthetic detection dataset, or (--task keypoints) the stick-figure "
             "keypoint dataset with COCO's 17 joints (deterministic for a seed)",
             "  scaledet data synth data/synth --train 800 --val 200 --seed 0\n"
             "  scaledet data synth data/synth_yolo --format yolo\n"
             "  scaledet data synth data/pose --task keypoints   # --format yolo: YOLO pose\n"
             "  scaledet data synth data/faces --task faces   # COCO, 5 landmarks per face\n"
             "  scaledet data synth data/ids --task face-identities --identities 200\n"
             "  scaledet data synth data/ids --task face-identities --scenes   # + photos\n"
             "  scaledet data synth data/faces --task faces --real-faces 0.3   # + LFW faces\n"
             "  scaledet data synth data/real --task real-faces --test 300   # held-out LFW\n")
    p.add_argument("out", help="output folder")
    p.add_argument("--train", type=int, default=800, help="number of training images")
    p.add_argument("--val", type=int, default=200, help="number of validation images")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated images")
    p.add_argument("--imgsz", type=int, default=None,
                   help="image side in pixels (default 320; face-identities: crop side, 112)")
    p.add_argument("--format", choices=["coco", "yolo"], default="coco",
                   help="dataset format to write")
    p.add_argument("--task", choices=["detect", "keypoints", "faces", "face-identities",
                                      "real-faces"],
                   default="detect",
                   help="detect: shapes with boxes; keypoints: person figures with 17 COCO "
                        "joints and skeleton (COCO keypoints json or YOLO pose); faces: "
                        "synthetic faces at every scale with 5 landmarks (COCO keypoints); "
                        "face-identities: aligned face crops per identity (train/ID/) and "
                        "LFW-style verification pairs over disjoint identities (verify/, "
                        "pairs.txt); --imgsz is then the crop side (default 112); "
                        "real-faces: a test split only (--test images) of scikit-image's "
                        "held-out LFW faces 70-99 pasted at 12-96 px among its 100 non-face "
                        "patches on textured backgrounds (COCO boxes, landmarks unlabelled)")
    p.add_argument("--test", type=int, default=300,
                   help="real-faces: number of test images (the only split it writes)")
    p.add_argument("--real-faces", type=float, default=0.0, metavar="FRACTION",
                   help="faces: fraction of the train and val faces replaced by real LFW "
                        "faces 0-69 (landmarks unlabelled, so the landmark loss skips them; "
                        "never 70-99, the real-faces test set's); 0 writes the purely "
                        "synthetic set")
    p.add_argument("--identities", type=int, default=100,
                   help="face-identities: training identities")
    p.add_argument("--per-identity", type=int, default=20,
                   help="face-identities: crops per training identity")
    p.add_argument("--verify-identities", type=int, default=50,
                   help="face-identities: verification identities")
    p.add_argument("--verify-per-identity", type=int, default=10,
                   help="face-identities: crops per verification identity")
    p.add_argument("--pairs-per-fold", type=int, default=30,
                   help="face-identities: matched (and as many mismatched) pairs per fold of "
                        "the 10 in pairs.txt (LFW: 300; TAR at FAR 1e-4 needs >= 1000, i.e. "
                        ">= 10^4 mismatched pairs)")
    p.add_argument("--scenes", type=int, nargs="?", const=320, default=None, metavar="SIZE",
                   help="face-identities: also write verify_scenes/, an unaligned SIZE px photo "
                        "(default 320) of every verification crop, named as the crops (for "
                        "`scaledet face verify --detector ... --root OUT/verify_scenes`)")
    p = _add(dsub, "check", "scaledet.cli.data:check_command",
             "validate a dataset and print a report (exit 1 on errors; warnings do not fail)",
             "  scaledet data check data/synth\n  scaledet data check my_yolo/data.yaml\n"
             "  scaledet data check data/synth --plots runs/labels --imgsz 320\n")
    p.add_argument("dataset", help="COCO folder, YOLO data.yaml, or VOC folder")
    p.add_argument("--json", dest="json_out", help="also write the report as json")
    p.add_argument("--plots", metavar="DIR",
                   help="also write DIR/labels_<split>.png: objects per class and object sizes")
    p.add_argument("--imgsz", type=int, default=320,
                   help="training size the size plot also shows the objects at (default 320)")
    p = _add(dsub, "convert", "scaledet.cli.data:convert_command",
             "convert a dataset between COCO, YOLO (and from VOC, WIDER FACE and RetinaFace "
             "labels)",
             "  scaledet data convert data/synth data/synth_yolo --to yolo\n"
             "  scaledet data convert my_yolo/data.yaml my_coco --to coco\n"
             "  scaledet data convert wider_face_split/wider_face_val_bbx_gt.txt wider_coco "
             "--to coco\n"
             "  scaledet data convert retinaface/train/label.txt faces_coco --to coco\n")
    p.add_argument("src", help="COCO folder, YOLO data.yaml, VOC folder, WIDER FACE "
                               "wider_face_*_bbx_gt.txt (or its folder) or RetinaFace label.txt")
    p.add_argument("dst", help="output folder (must not exist or be empty)")
    p.add_argument("--to", choices=["coco", "yolo"], required=True, help="format to write")
    p.add_argument("--copy-images", action="store_true", help="copy images instead of linking")

    # ---- train / val / predict / demo ----------------------------------------------------
    p = _add(sub, "train", "scaledet.cli.train:train_command",
             "train a detector, or (pose presets) a top-down keypoint model",
             "  scaledet train --data data/synth --model fcos-n --time 10\n"
             "  scaledet train --data data/pose --model pose-heatmap-n --time 10   # keypoints\n"
             "  scaledet train --data my_yolo/data.yaml --model fcos-s --epochs 50 --imgsz 640\n"
             "  scaledet train --data data/synth --model fcos-n --out runs/a --resume\n"
             "  scaledet train --data new/ --weights runs/a/weights/best.safetensors --time 5\n"
             "  scaledet train --data new/ --weights base.safetensors --adapter lora --rank 8\n")
    p.add_argument("--data", required=True, help="COCO folder, YOLO data.yaml or VOC folder")
    p.add_argument("--model", default=None,
                   help="model preset: fcos-n, fcos-s, fcos-m, yolo-n, rtdetr-n; pose (on a "
                        "keypoint dataset, crop size from the preset, --set input_size=[H,W]): "
                        "pose-heatmap-n, pose-rle-n (sizes and FLOPs: scaledet info; default "
                        "fcos-n, with --weights the checkpoint's)")
    p.add_argument("--weights", metavar="BASE.safetensors",
                   help="start from this trained checkpoint (its architecture; the class layers "
                        "are rebuilt when the dataset's classes differ)")
    p.add_argument("--adapter", choices=["lora", "adapter", "prefix", "head"],
                   help="with --weights: freeze the base and train only LoRA updates, bottleneck "
                        "adapters, attention prefixes or the head; the checkpoints hold only "
                        "what trained and need the base file")
    p.add_argument("--rank", type=int, default=8,
                   help="LoRA rank, adapter bottleneck width or prefix length")
    p.add_argument("--sigmas", metavar="S1,S2,...",
                   help="pose models: per-keypoint OKS sigmas of the validation (default: "
                        "COCO's for 17 keypoints; needed for other keypoint counts)")
    p.add_argument("--imgsz", type=int, default=None,
                   help="training and validation input side in pixels, rounded up to a "
                        "multiple of the model's largest stride (default: 320); a pose "
                        "model's input is its HxW crop: --set input_size=[H,W]")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, default=None,
                   help="number of epochs (default: as --time says; neither: 10 minutes)")
    g.add_argument("--time", type=float, default=None, help="wall-clock budget in minutes")
    p.add_argument("--batch", type=int, default=16,
                   help="images per optimizer step, all --nproc processes together")
    p.add_argument("--workers", type=int, default=None,
                   help="data-loading processes per --nproc rank (default: 0 when every "
                        "rank has one CPU core, as with --nproc auto on 2 cores; else 2 shared "
                        "by the ranks, at least 1 each)")
    p.add_argument("--nproc", default="auto",
                   help="data-parallel training processes, or auto (default); each takes a "
                        "share of --batch and of the CPU cores (or one GPU each). auto: one "
                        "per core while each keeps 8+ images of --batch, so 2 at batch 16 on a "
                        "CPU with 2+ cores; one per GPU with --device cuda")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--out", default="runs/train",
                   help="run folder: weights/, metrics.csv and plots/ go here")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out exactly where it stopped (also after Ctrl-C)")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the initial weights, the data order and the augmentation")
    p.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    p.add_argument("--strict", action="store_true", help="stop at the first unreadable image")
    p.add_argument("--optimizer", choices=["adamw", "sgd"], default="adamw", help="optimizer")
    p.add_argument("--warmup", type=int, default=None, help="warm-up iterations (default 50)")
    p.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], default="auto",
                   help="mixed precision (auto: bf16/fp16 on CUDA; on CPUs with native bf16, "
                        "bf16 if a timed trial step is faster than fp32, else off)")
    p.add_argument("--grad-ckpt", action="store_true",
                   help="gradient checkpointing of the backbone (less memory, ~30%% slower)")
    p.add_argument("--eval-interval", type=int, default=None,
                   help="validate every N epochs (default 1, and with --time at most every "
                        "TIME/6 minutes; 0: only at the end)")
    p.add_argument("--exist-ok", action="store_true", help="overwrite the run in --out")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="override a field of the preset's ModelConfig, e.g. --set head.norm=gn "
                        "--set neck.channels=64 (repeatable; see scaledet info)")
    p.add_argument("--train-option", action="append", metavar="FIELD=VALUE",
                   help="override a field of the trainer's TrainConfig, e.g. --train-option "
                        "ema_tau=600 --train-option close_mosaic=0 (repeatable)")
    p.add_argument("--augment", action="append", metavar="FIELD=VALUE",
                   help="override a field of the training AugmentConfig, e.g. --augment "
                        "mosaic=0.5 --augment scale_range=[0.75,1.25] (repeatable)")

    p = _add(sub, "val", "scaledet.cli.train:val_command",
             "evaluate trained weights on a dataset split (12 COCO stats; a pose model: the 10 "
             "OKS stats on the ground-truth person boxes)",
             "  scaledet val --weights runs/train/weights/best.safetensors --data data/synth\n"
             "  scaledet val --weights runs/pose/weights/best.safetensors --data data/pose\n"
             "  scaledet val --weights W --data data/synth --json val.json --plots runs/val\n"
             "  scaledet val --weights DIFFUSIONDET --data data/synth --set head.steps=4\n")
    p.add_argument("--weights", required=True, help="a .safetensors checkpoint of scaledet train")
    p.add_argument("--data", required=True, help="COCO folder, YOLO data.yaml or VOC folder")
    p.add_argument("--split", default="val", help="dataset split to score (default: val)")
    p.add_argument("--imgsz", type=int, default=None,
                   help="input side in pixels, rounded up to a multiple of the model's largest "
                        "stride (default: the training one)")
    p.add_argument("--json", dest="json_out", help="also write the stats and per-class AP here")
    p.add_argument("--plots", metavar="DIR",
                   help="also write PR curves and the confusion matrix as PNG to DIR")
    p.add_argument("--batch", type=int, default=16, help="images per forward pass")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="inference option of the checkpoint's model, e.g. for diffusiondet-n "
                        "--set head.steps=4 --set head.num_boxes=300 --set head.seed=1 "
                        "(repeatable; the head's inference options and postprocess.*; a wrong "
                        "name lists the valid ones)")

    p = _add(sub, "predict", "scaledet.cli.predict:predict_command",
             "run a detector on images or folders: annotated images and COCO-results json "
             "(or Parquet), streamed and resumable",
             "  scaledet predict --weights best.safetensors img1.jpg folder/ --out runs/pred\n"
             "  scaledet predict --weights W big/ --slice 512 --overlap 0.2 --no-images\n"
             "  scaledet predict --weights W val/ --tta scales=0.75,1,1.5,flip --nms diou\n"
             "  scaledet predict --weights W huge_folder/ --parquet dets.parquet --resume\n"
             "  scaledet predict --weights W val/ --json dets.json --gt instances_val.json\n"
             "  scaledet predict --weights W paths.txt --engine ray --workers 2 "
             "--parquet dets.parquet\n"
             "  scaledet predict --weights DET --pose-weights POSE photos/   # + skeletons\n"
             "  scaledet predict --weights DIFFUSIONDET val/ --set head.steps=4 "
             "--set head.seed=1\n")
    p.add_argument("--weights", required=True, help="a .safetensors checkpoint of scaledet train")
    p.add_argument("--pose-weights", metavar="POSE.safetensors",
                   help="a pose model's checkpoint (pose-heatmap-n / pose-rle-n) run on the "
                        "detected people: skeletons drawn, keypoints in the json and the "
                        "Parquet keypoints column")
    p.add_argument("--pose-classes", metavar="NAME[,NAME...]",
                   help="--pose-weights: the detector classes to pose (default: person when "
                        "the detector has that class, else every box)")
    p.add_argument("source", nargs="+",
                   help="images or folders (--engine ray: also .txt / .parquet listings)")
    p.add_argument("--out", default="runs/predict",
                   help="annotated images, predictions.json and errors.txt go here")
    p.add_argument("--conf", type=float, default=0.25,
                   help="minimum score of a kept detection, in [0, 1)")
    p.add_argument("--json", dest="json_out",
                   help="COCO results here (default OUT/predictions.json unless --parquet)")
    p.add_argument("--gt", metavar="GT.json",
                   help="number the images with this COCO ground truth's image ids, matched by "
                        "file name (default: 1..N in input order)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--imgsz", type=int, default=None,
                   help="input side in pixels, rounded up to a multiple of the model's largest "
                        "stride (default: the training one)")
    p.add_argument("--batch", type=int, default=8, help="images per forward pass")
    p.add_argument("--nms", choices=["hard", "soft-linear", "soft-gaussian", "diou"],
                   default=None, help="NMS variant (model, TTA and tile merging)")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold")
    p.add_argument("--max-det", type=int, default=None, help="detections kept per image")
    p.add_argument("--set", action="append", metavar="FIELD=VALUE",
                   help="inference option of the checkpoint's model, e.g. for diffusiondet-n "
                        "--set head.steps=4 --set head.num_boxes=300 --set head.seed=1 "
                        "(repeatable; the head's inference options and postprocess.*; a wrong "
                        "name lists the valid ones)")
    p.add_argument("--tta", metavar="scales=S,S,...[,flip][,snip]",
                   help="image-pyramid TTA, e.g. scales=0.75,1,1.5,flip (snip: SNIP ranges)")
    p.add_argument("--slice", type=int, metavar="TILE", help="sliced inference, TILE px tiles")
    p.add_argument("--overlap", type=float, default=0.2, help="tile overlap fraction")
    p.add_argument("--full", action="store_true",
                   help="slicing: also run the whole image downscaled (objects > a tile)")
    p.add_argument("--merge", choices=["wbf", "nms", "nmm"], default=None,
                   help="merge TTA passes (wbf|nms, default wbf) or tiles (nmm|nms, default nmm)")
    p.add_argument("--parquet", metavar="OUT.parquet",
                   help="write a Parquet dataset (one row per box): instead of the json, or "
                        "as well as it when --json is given too")
    p.add_argument("--resume", action="store_true", help="skip images already written")
    p.add_argument("--no-images", action="store_true", help="do not write annotated images")
    p.add_argument("--engine", choices=["local", "ray"], default="local",
                   help="ray: run on a Ray cluster (pip install 'scaledet[ray]'), writing the "
                        "--parquet dataset and OUT/errors.txt only; SOURCE may also be a .txt "
                        "or .parquet listing of image paths")
    p.add_argument("--address", metavar="ADDR",
                   help="--engine ray: join this Ray cluster (default: start a local one "
                        "with this machine's cores)")
    p.add_argument("--workers", type=int, metavar="N",
                   help="--engine ray: model copies (Ray actors), each with its share of the "
                        "cores as threads (default: one per 4 CPUs of the cluster)")

    p = _add(sub, "export", "scaledet.cli.predict:export_command",
             "export trained weights to ONNX (checked against PyTorch with onnxruntime)",
             "  scaledet export --weights best.safetensors --format onnx\n"
             "  scaledet export --weights best.safetensors --format onnx --dynamic --nms\n"
             "  scaledet export --weights pose.safetensors   # crops -> keypoints, scores\n")
    p.add_argument("--weights", required=True, help="a .safetensors checkpoint of scaledet train")
    p.add_argument("--format", choices=["onnx", "safetensors"], default="onnx",
                   help="export format; safetensors: one standalone checkpoint (an adapted "
                        "one with its base included and LoRA merged)")
    p.add_argument("--out", help="output file (default: the weights path with .onnx)")
    p.add_argument("--imgsz", type=int, default=None, help="input side (default: the training one)")
    p.add_argument("--batch", type=int, default=1, help="batch of the example input")
    p.add_argument("--dynamic", action="store_true",
                   help="free batch, height and width (a pose model: its batch is always "
                        "free, its crop size fixed)")
    p.add_argument("--nms", action="store_true", help="include NMS: output detections (K, 7)")
    p.add_argument("--conf", type=float, default=None, help="NMS score threshold")
    p.add_argument("--iou", type=float, default=None, help="NMS IoU threshold")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset version")

    p = _add(sub, "demo", "scaledet.cli.train:demo_command",
             "build the built-in dataset, train the default preset, evaluate and predict",
             "  scaledet demo\n  scaledet demo --minutes 3 --out runs/quick\n")
    p.add_argument("--minutes", type=float, default=10.0, help="training budget in minutes")
    p.add_argument("--out", default="runs/demo",
                   help="folder for the dataset (data/), the run (train/) and predictions/")
    p.add_argument("--model", default="fcos-n", help="model preset (see scaledet info)")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--nproc", default="auto", help="training processes (see train --help)")

    # ---- faces ---------------------------------------------------------------------------
    pf = sub.add_parser("face", help="face recognition: train, verify",
                        description="face recognition: train an embedding network with a "
                                    "margin-softmax head, verify pairs (LFW protocol)")
    fsub = pf.add_subparsers(dest="face_command", metavar="FACE_COMMAND")
    p = _add(fsub, "train", "scaledet.cli.face:train_command",
             "train a face embedding network (MobileFaceNet-style) on aligned crops, one folder "
             "per identity, with a softmax / SphereFace / CosFace / ArcFace head (softmax "
             "warm-up, then the margin ramps in); validated on LFW pairs",
             "  scaledet data synth data/ids --task face-identities\n"
             "  scaledet face train --data data/ids --loss arcface --time 5 --out runs/face\n"
             "  scaledet face train --data data/ids --loss cosface --imgsz 112 "
             "--arch mobilefacenet\n")
    p.add_argument("--data", required=True,
                   help="folder with train/<identity>/ crops (and verify/ + pairs.txt)")
    p.add_argument("--loss", choices=["softmax", "sphereface", "cosface", "arcface"],
                   default="arcface", help="classification head")
    p.add_argument("--margin", type=float, default=None,
                   help="the loss's margin (sphereface m1, arcface m2 in radians, cosface m3; "
                        "default the paper's: 1.35, 0.5, 0.35)")
    p.add_argument("--scale", type=float, default=32.0, help="logit scale s")
    p.add_argument("--margin-warmup", type=float, default=0.1,
                   help="fraction of the run trained without margin (plain softmax)")
    p.add_argument("--margin-ramp", type=float, default=0.2,
                   help="fraction of the run over which the margin then grows to full")
    p.add_argument("--arch", choices=["mobilefacenet", "small"], default="small",
                   help="mobilefacenet: the paper's network; small: half width, fewer blocks "
                        "(CPU)")
    p.add_argument("--imgsz", type=int, default=64,
                   help="network input side (multiple of 16; crops are resized to it)")
    p.add_argument("--embedding-dim", type=int, default=128, help="embedding size")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--epochs", type=int, default=None, help="number of epochs")
    g.add_argument("--time", type=float, default=None,
                   help="wall-clock budget in minutes (default 10 when neither is given)")
    p.add_argument("--batch", type=int, default=64, help="crops per step")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate")
    p.add_argument("--pairs", default=None, help="pairs file (default DATA/pairs.txt)")
    p.add_argument("--verify-root", default=None, help="crops of --pairs (default DATA/verify)")
    p.add_argument("--seed", type=int, default=0, help="seeds weights and data order")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--out", default="runs/face", help="run folder (weights/, metrics.csv)")
    p.add_argument("--exist-ok", action="store_true", help="overwrite the run in --out")
    p = _add(fsub, "verify", "scaledet.cli.face:verify_command",
             "score every pair of an LFW pairs.txt on aligned crops, or (--detector) on "
             "unaligned photos whose face is detected, aligned and embedded first (cosine "
             "similarity of the embeddings): 10-fold accuracy, ROC AUC, TAR at FAR 1e-3 / "
             "1e-4, ROC plot; with --detector also per-stage latency and the photos without a "
             "face (their pairs score -1, so a matched pair counts as wrong)",
             "  scaledet face verify --weights runs/face/weights/best.safetensors "
             "--pairs data/ids/pairs.txt --root data/ids/verify\n"
             "  scaledet face verify --weights EMB --detector runs/facedet/weights/"
             "best.safetensors --pairs data/ids/pairs.txt --root data/ids/verify_scenes\n")
    p.add_argument("--weights", required=True, help="a checkpoint of scaledet face train")
    p.add_argument("--pairs", required=True, help="LFW-format pairs.txt")
    p.add_argument("--root", required=True,
                   help="folder of aligned crops, ROOT/NAME/NAME_NNNN.{jpg,png} (with "
                        "--detector: unaligned photos in that layout)")
    p.add_argument("--detector", default=None, metavar="WEIGHTS",
                   help="a face detector with five landmarks per box (scaledet train --model "
                        "face-n): the images under --root are unaligned photos")
    p.add_argument("--pick", choices=["score", "largest"], default=None,
                   help="--detector: the face used per photo, the highest-scoring detection "
                        "(default) or the largest box")
    p.add_argument("--conf", type=float, default=None,
                   help="--detector: minimum detection score of a face (default 0.3)")
    p.add_argument("--out", default="runs/face_verify", help="roc.png and verification.json")
    p.add_argument("--batch", type=int, default=64, help="crops per forward pass")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")

    # ---- models --------------------------------------------------------------------------
    p = _add(sub, "info", "scaledet.cli.info:info_command",
             "parameters, FLOPs (counted), receptive field and stride of each output level",
             "  scaledet info                      # every preset, one line each\n"
             "  scaledet info --model yolo-n --imgsz 320\n"
             "  scaledet info --model fcos-n --layers   # every layer's receptive field\n"
             "  scaledet info --weights runs/a/weights/best.safetensors  # trainable / total\n")
    p.add_argument("--model", default=None, help="model preset (default: list all presets)")
    p.add_argument("--weights", default=None,
                   help="a checkpoint instead of a preset: also its trainable and total "
                        "parameters (an adapted one: the adapter's share)")
    p.add_argument("--imgsz", type=int, default=320,
                   help="square input side in pixels, rounded up to a multiple of the model's "
                        "largest stride")
    p.add_argument("--num-classes", type=int, default=80,
                   help="classes of the head (its parameters and FLOPs depend on them)")
    p.add_argument("--layers", action="store_true", help="also print every layer's field")
    return parser


def _version() -> str:
    from scaledet import __version__

    return f"scaledet {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "_handler", None)
    if handler is None:
        # `scaledet` or `scaledet data` alone: show the relevant help.
        if args.command in ("data", "face"):
            parser.parse_args([args.command, "--help"])
        parser.print_help()
        return 2
    module_name, func_name = handler.split(":")
    func = getattr(importlib.import_module(module_name), func_name)
    try:
        return int(func(args) or 0)
    except (CLIError, ValueError, FileNotFoundError, NotADirectoryError) as e:
        print(f"scaledet {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
