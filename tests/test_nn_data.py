"""nn.data: the scikit-learn digits split, and the MNIST IDX reader on files written here."""
import gzip

import numpy as np
import pytest

from nn.data import load_digits, load_mnist_idx


def test_digits_split_is_stratified_seeded_and_scaled():
    data = load_digits(seed=3)
    sizes = {k: len(data[f"y_{k}"]) for k in ("train", "val", "test")}
    assert sum(sizes.values()) == 1797 and sizes["test"] == 360 and sizes["val"] == 180
    for split in ("train", "val", "test"):
        X, y = data[f"X_{split}"], data[f"y_{split}"]
        assert X.shape == (len(y), 1, 8, 8) and X.dtype == np.float32 and y.dtype == np.int64
        assert 0.0 <= X.min() and X.max() <= 1.0
        counts = np.bincount(y, minlength=10) / len(y)
        assert np.all(np.abs(counts - 0.1) < 0.02)  # every class at about its 10 % share
    again = load_digits(seed=3)
    np.testing.assert_array_equal(again["X_val"], data["X_val"])
    assert not np.array_equal(load_digits(seed=4)["y_val"], data["y_val"])


def test_digits_centering_uses_the_training_mean():
    data = load_digits(center=True)
    np.testing.assert_allclose(data["X_train"].mean(axis=0), 0, atol=1e-6)
    raw = load_digits()
    np.testing.assert_allclose(data["X_test"], raw["X_test"] - data["mean_image"], atol=1e-6)


def idx_bytes(magic, dims, payload):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims)
    return header + bytes(payload)


@pytest.fixture
def mnist_pair(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 5, dtype=np.uint8)
    images_path, labels_path = tmp_path / "images-idx3-ubyte", tmp_path / "labels-idx1-ubyte"
    images_path.write_bytes(idx_bytes(2051, (5, 4, 3), images.tobytes()))
    labels_path.write_bytes(idx_bytes(2049, (5,), labels.tobytes()))
    return images_path, labels_path, images, labels


def test_reads_raw_idx(mnist_pair):
    images_path, labels_path, images, labels = mnist_pair
    X, y = load_mnist_idx(images_path, labels_path)
    assert X.shape == (5, 1, 4, 3) and X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(X[:, 0] * 255, images, atol=1e-4)
    np.testing.assert_array_equal(y, labels)


def test_reads_gzip_idx_detected_by_content(mnist_pair, tmp_path):
    images_path, labels_path, images, labels = mnist_pair
    gz_images = tmp_path / "images.bin"  # no .gz suffix: detection is by the gzip magic bytes
    gz_images.write_bytes(gzip.compress(images_path.read_bytes()))
    X, y = load_mnist_idx(gz_images, labels_path)
    np.testing.assert_allclose(X[:, 0] * 255, images, atol=1e-4)


def test_truncated_file(mnist_pair):
    images_path, labels_path, _, _ = mnist_pair
    images_path.write_bytes(images_path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="truncated"):
        load_mnist_idx(images_path, labels_path)
    images_path.write_bytes(b"\x00\x00\x08")
    with pytest.raises(ValueError, match="too short"):
        load_mnist_idx(images_path, labels_path)


def test_corrupt_gzip(mnist_pair, tmp_path):
    images_path, labels_path, _, _ = mnist_pair
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(images_path.read_bytes())[:-12])
    with pytest.raises(ValueError, match="gzip"):
        load_mnist_idx(broken, labels_path)


def test_wrong_magic_and_swapped_files(mnist_pair):
    images_path, labels_path, _, _ = mnist_pair
    with pytest.raises(ValueError, match="magic number 2049, expected 2051"):
        load_mnist_idx(labels_path, images_path)


def test_extra_data_and_count_mismatch(mnist_pair, tmp_path):
    images_path, labels_path, _, _ = mnist_pair
    padded = tmp_path / "padded"
    padded.write_bytes(labels_path.read_bytes() + b"\x01")
    with pytest.raises(ValueError, match="extra data"):
        load_mnist_idx(images_path, padded)
    short = tmp_path / "short"
    short.write_bytes(idx_bytes(2049, (4,), [1, 2, 3, 4]))
    with pytest.raises(ValueError, match="5 images .* but 4 labels"):
        load_mnist_idx(images_path, short)
