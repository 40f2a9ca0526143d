"""nn.data: the scikit-learn digits split, and the MNIST IDX and CIFAR-10 binary readers on files written here."""
import gzip

import numpy as np
import pytest

from nn.data import CIFAR10_CLASSES, load_cifar10, load_digits, load_mnist_idx


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


# CIFAR-10 binary format, as https://www.cs.toronto.edu/~kriz/cifar.html states it: each record is
# 1 label byte then 3072 pixel bytes, the 1024 red values first, then green, then blue, each plane
# row-major over 32x32. The reference below transcribes that byte offset literally.
CIFAR_BATCHES = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]


def cifar_pixel(record: bytes, channel, row, col):
    return record[1 + 1024 * channel + 32 * row + col]


def cifar_records(rng, count):
    return [bytes([int(rng.integers(0, 10))]) + rng.integers(0, 256, 3072, dtype=np.uint8).tobytes()
            for _ in range(count)]


@pytest.fixture
def cifar_dir(tmp_path):
    """Six tiny batch files (2, 3, 1, 2, 4 training records, 3 test) in tmp_path/cifar-10-batches-bin."""
    rng = np.random.default_rng(1)
    directory = tmp_path / "cifar-10-batches-bin"
    directory.mkdir()
    records = {}
    for name, count in zip(CIFAR_BATCHES, (2, 3, 1, 2, 4, 3)):
        records[name] = cifar_records(rng, count)
        (directory / name).write_bytes(b"".join(records[name]))
    train = [r for name in CIFAR_BATCHES[:5] for r in records[name]]
    return directory, train, records["test_batch.bin"]


def assert_matches_records(X, y, records):
    assert X.shape == (len(records), 3, 32, 32) and y.shape == (len(records),)
    for i, record in enumerate(records):
        assert y[i] == record[0]
        for channel, row, col in [(0, 0, 0), (0, 0, 31), (1, 5, 2), (2, 31, 0), (2, 31, 31), (1, 17, 9)]:
            assert X[i, channel, row, col] == cifar_pixel(record, channel, row, col)
        expected = [[[cifar_pixel(record, c, r, k) for k in range(32)] for r in range(32)] for c in range(3)]
        np.testing.assert_array_equal(X[i], expected)


def test_cifar10_reads_records_in_channel_row_col_order(cifar_dir):
    directory, train, test = cifar_dir
    data = load_cifar10(directory)
    assert set(data) == {"X_train", "y_train", "X_test", "y_test"}
    assert data["X_train"].dtype == np.float32 and data["y_train"].dtype == np.int64
    assert_matches_records(data["X_train"], data["y_train"], train)
    assert_matches_records(data["X_test"], data["y_test"], test)
    assert len(CIFAR10_CLASSES) == 10 and CIFAR10_CLASSES[0] == "airplane" and CIFAR10_CLASSES[9] == "truck"


def test_cifar10_planes_are_red_green_blue(tmp_path):
    record = bytearray(3073)
    record[0] = 7
    record[1:1025] = bytes([10]) * 1024   # red plane
    record[1025:2049] = bytes([20]) * 1024  # green plane
    record[2049:] = bytes([30]) * 1024     # blue plane
    record[1 + 32 * 2 + 5] = 255           # red, row 2, column 5
    for name in CIFAR_BATCHES:
        (tmp_path / name).write_bytes(bytes(record))
    X = load_cifar10(tmp_path)["X_train"]
    assert X.shape == (5, 3, 32, 32)
    np.testing.assert_array_equal(X[:, 1], 20)
    np.testing.assert_array_equal(X[:, 2], 30)
    assert X[0, 0, 2, 5] == 255 and X[0, 0, 5, 2] == 10 and (X[0, 0] == 10).sum() == 1023


def test_cifar10_root_may_be_the_parent_directory(cifar_dir):
    directory, train, _ = cifar_dir
    from_parent = load_cifar10(str(directory.parent))
    np.testing.assert_array_equal(from_parent["X_train"], load_cifar10(directory)["X_train"])
    assert len(from_parent["y_train"]) == len(train)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cifar10_dtype_keeps_raw_pixel_scale(cifar_dir, dtype):
    directory, train, _ = cifar_dir
    data = load_cifar10(directory, dtype=dtype)
    for key in ("X_train", "X_test"):
        assert data[key].dtype == dtype and data[key].flags.c_contiguous
    assert data["X_train"].max() == max(max(r[1:]) for r in train)  # 0..255, not rescaled


def test_cifar10_validation_is_the_last_training_records(cifar_dir):
    directory, train, test = cifar_dir
    data = load_cifar10(directory, num_validation=5)
    assert_matches_records(data["X_train"], data["y_train"], train[:-5])
    assert_matches_records(data["X_val"], data["y_val"], train[-5:])
    assert_matches_records(data["X_test"], data["y_test"], test)
    assert data["y_val"].dtype == np.int64 and data["X_val"].dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cifar10_subtract_mean_uses_the_training_split(cifar_dir, dtype):
    directory, train, _ = cifar_dir
    raw = load_cifar10(directory, num_validation=4, dtype=np.float64)
    data = load_cifar10(directory, num_validation=4, subtract_mean=True, dtype=dtype)
    mean_image = np.mean([np.frombuffer(r[1:], np.uint8).astype(np.float64) for r in train[:-4]], axis=0)
    mean_image = mean_image.reshape(3, 32, 32)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(data["mean_image"], mean_image, atol=tol)
    assert data["mean_image"].dtype == dtype
    for split in ("train", "val", "test"):
        assert data[f"X_{split}"].dtype == dtype
        np.testing.assert_allclose(data[f"X_{split}"], raw[f"X_{split}"] - mean_image, atol=tol)
    np.testing.assert_allclose(data["X_train"].mean(axis=0), 0, atol=tol)


def test_cifar10_partial_record_names_the_file(cifar_dir):
    directory, _, _ = cifar_dir
    path = directory / "data_batch_3.bin"
    path.write_bytes(path.read_bytes() + bytes(100))
    with pytest.raises(ValueError, match=r"data_batch_3\.bin.*3173 bytes"):
        load_cifar10(directory)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"data_batch_3\.bin.*0 bytes"):
        load_cifar10(directory)


def test_cifar10_bad_label_names_the_file(cifar_dir):
    directory, _, test = cifar_dir
    corrupt = bytearray(b"".join(test))
    corrupt[3073] = 10  # the second record's label byte
    (directory / "test_batch.bin").write_bytes(bytes(corrupt))
    with pytest.raises(ValueError, match=r"test_batch\.bin.*record 1 has label 10"):
        load_cifar10(directory)


def test_cifar10_missing_file_says_where_the_data_comes_from(cifar_dir, tmp_path):
    directory, _, _ = cifar_dir
    (directory / "data_batch_5.bin").unlink()
    with pytest.raises(FileNotFoundError, match=r"data_batch_5\.bin.*binary version.*kriz/cifar\.html"):
        load_cifar10(directory)
    with pytest.raises(FileNotFoundError, match=r"data_batch_1\.bin"):
        load_cifar10(tmp_path / "nowhere")


def test_cifar10_argument_validation(cifar_dir):
    directory, train, _ = cifar_dir
    for bad, error in [(-1, ValueError), (len(train), ValueError), (1.5, TypeError), (True, TypeError)]:
        with pytest.raises(error, match="num_validation"):
            load_cifar10(directory, num_validation=bad)
    assert len(load_cifar10(directory, num_validation=len(train) - 1)["y_train"]) == 1
    for bad in (np.int64, np.uint8, "not a dtype"):
        with pytest.raises(TypeError, match="dtype"):
            load_cifar10(directory, dtype=bad)
    with pytest.raises(TypeError, match="root"):
        load_cifar10(None)
