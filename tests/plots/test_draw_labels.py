"""``plots/train_batch.jpg``: the first training batch drawn as a grid with its boxes."""

import numpy as np
import torch
from PIL import Image

from scaledet.plots.draw import _colour, plot_train_batch


def test_train_batch_grid_draws_boxes_in_the_right_tile(tmp_path):
    images = torch.full((5, 3, 40, 60), 0.5)  # 5 images -> 3 x 2 grid of 60 x 40 tiles
    targets = [{"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)}
               for _ in range(5)]
    targets[4] = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 38.0]]), "labels": torch.tensor([1]),
                  "ignore": torch.tensor([[2.0, 2.0, 20.0, 12.0]])}
    path = plot_train_batch(images, targets, ["a", "b"], tmp_path / "plots" / "b.jpg")
    grid = np.asarray(Image.open(path)).astype(int)
    assert grid.shape == (2 * 40, 3 * 60, 3)
    x0, y0 = 1 * 60, 1 * 40  # image 4 is row 1, column 1
    edge = grid[y0 + 30, x0 + 50]  # right edge of the box, below the label
    assert np.abs(edge - np.array(_colour(1))).max() < 40  # JPEG
    assert np.abs(grid[y0 + 30, x0 + 30] - 128).max() < 8  # inside: untouched grey
    assert np.abs(grid[y0 + 30, 30] - 128).max() < 8  # the same place in image 1: no box
    assert grid[y0 + 7, x0 + 2].mean() > 150  # the ignore region's light grey outline


def test_uint8_batch_and_more_images_than_the_grid(tmp_path):
    images = torch.zeros(20, 3, 16, 16, dtype=torch.uint8)
    targets = [{"boxes": torch.tensor([[1.0, 1.0, 9.0, 9.0]]), "labels": torch.tensor([7])}] * 20
    path = plot_train_batch(images, targets, ["only"], tmp_path / "b.jpg")  # label 7: no name
    assert Image.open(path).size == (4 * 16, 4 * 16)  # the first 16


def _dataset():
    from scaledet.data.records import DetectionDataset, DetectionRecord

    records = [DetectionRecord(1, "a.jpg", 200, 100, [[0, 0, 10, 40], [5, 5, 25, 25]], [0, 2]),
               DetectionRecord(2, "b.jpg", 50, 80, [[0, 0, 16, 4], [0, 0, 30, 30], [1, 1, 1, 9]],
                               [2, 2, 1], iscrowd=[False, True, False])]
    return DetectionDataset(records, ["a", "b", "c"])


def test_label_stats_count_and_size_non_crowd_boxes():
    from scaledet.plots.labels import label_stats

    counts, size, at_imgsz = label_stats(_dataset(), imgsz=100)
    assert counts.tolist() == [1, 1, 2]  # the crowd box is no object; the empty one counts
    np.testing.assert_allclose(size, [20, 20, 8])  # sqrt(10 * 40), sqrt(20 * 20), sqrt(16 * 4)
    np.testing.assert_allclose(at_imgsz, [10, 10, 10])  # 200 px -> 100, 80 px -> 100
    assert label_stats(_dataset())[2] is None


def test_plot_labels_and_data_check_plots(tmp_path, capsys):
    from scaledet.cli import main
    from scaledet.plots.labels import plot_labels

    path = plot_labels(_dataset(), tmp_path / "l.png", imgsz=64)
    assert Image.open(path).size == (1100, 400)
    assert main(["data", "synth", str(tmp_path / "d"), "--train", "3", "--val", "2",
                 "--imgsz", "64"]) == 0
    assert main(["data", "check", str(tmp_path / "d"), "--plots", str(tmp_path / "p")]) == 0
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["labels_train.png",
                                                                  "labels_val.png"]
