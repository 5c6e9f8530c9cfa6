"""Conversion-time image and text checks: every broken raw input is converted or skipped with its reason."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from helpers.raw_datasets import BAD_IMAGES, png_header_only
from vilt_lab.data.sources import images as img
from vilt_lab.data.sources.images import BadImage, ImagePolicy, RawImage, clean_image
from vilt_lab.data.sources.raw import check_text, clean_captions, decode_text

POLICY = ImagePolicy()


@pytest.mark.parametrize("case", [c for c, (data, _) in BAD_IMAGES.items() if data is not None])
def test_each_raw_image_case_is_cleaned_or_skipped_with_its_reason(case: str) -> None:
    data, outcome = BAD_IMAGES[case]
    assert data is not None
    if outcome in ("kept", "reencoded"):
        cleaned = clean_image(data, POLICY)
        assert cleaned.action == outcome
        with Image.open(io.BytesIO(cleaned.data)) as image:
            image.load()
            assert image.mode == "RGB" and image.format in img.KEPT_FORMATS
            assert image.size == Image.open(io.BytesIO(data)).size
        if outcome == "kept":
            assert cleaned.data == data
        else:
            assert image.format == "JPEG"
    else:
        with pytest.raises(BadImage) as caught:
            clean_image(data, POLICY)
        assert caught.value.reason == outcome


def test_missing_file_is_a_bad_image(tmp_path) -> None:
    with pytest.raises(BadImage) as caught:
        RawImage(str(tmp_path / "nope.jpg")).read()
    assert caught.value.reason == img.MISSING and "nope.jpg" in caught.value.detail


def test_unreadable_path_is_a_bad_image(tmp_path) -> None:
    with pytest.raises(BadImage) as caught:
        RawImage(str(tmp_path)).read()  # a directory
    assert caught.value.reason == img.UNREADABLE


def test_byte_range_reads_a_member(tmp_path) -> None:
    (tmp_path / "blob").write_bytes(b"headerPAYLOADtrailer")
    assert RawImage(str(tmp_path / "blob"), offset=6, size=7).read() == b"PAYLOAD"


def test_alpha_is_composited_over_white() -> None:
    clear = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red
    buffer = io.BytesIO()
    clear.save(buffer, format="PNG")
    out = Image.open(io.BytesIO(clean_image(buffer.getvalue(), POLICY).data))
    assert all(c >= 250 for c in out.getpixel((20, 20)))


def test_bomb_between_the_warning_and_the_error_limit_is_skipped_too() -> None:
    # PIL only warns between MAX_IMAGE_PIXELS (~89M) and twice that; 100M px must still be a skip.
    assert Image.MAX_IMAGE_PIXELS < 10_000 * 10_000 < 2 * Image.MAX_IMAGE_PIXELS
    with pytest.raises(BadImage) as caught:
        clean_image(png_header_only(10_000, 10_000), POLICY)
    assert caught.value.reason == img.TOO_LARGE


def test_min_side_is_configurable() -> None:
    data, _ = BAD_IMAGES["ten_pixel"]
    assert clean_image(data, ImagePolicy(min_side=8)).action == "kept"


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((1000, 500), (768, 384)),
        ((500, 1000), (384, 768)),
        ((384, 300), (384, 300)),
        ((385, 385), (384, 384)),
    ],
)
def test_pre_resize_sets_the_shorter_side_only_when_larger(size, expected) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buffer, format="JPEG")
    cleaned = clean_image(buffer.getvalue(), ImagePolicy(resize_shorter=384))
    assert Image.open(io.BytesIO(cleaned.data)).size == expected
    assert cleaned.action == ("kept" if size == expected else "resized")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty caption"),
        (" \n\t", "empty caption"),
        (None, "caption not a string"),
        (3, "caption not a string"),
    ],
)
def test_unusable_texts_are_named(text, reason) -> None:
    with pytest.raises(ValueError, match=reason):
        check_text(text, "caption")


def test_invalid_utf8_bytes_are_found() -> None:
    assert decode_text("déjà vu".encode(), "caption") == "déjà vu"
    with pytest.raises(ValueError, match="caption not valid UTF-8"):
        decode_text(b"bad \xff byte", "caption")


def test_clean_captions_drops_bad_and_duplicate_captions_in_order() -> None:
    skipped: list[dict[str, str]] = []
    raw = ["b", "a", "", "b", "bad \udcff", "c", "a"]  # a lone surrogate is what surrogateescape makes
    captions, duplicates = clean_captions("img7", raw, skipped)
    assert captions == ["b", "a", "c"] and duplicates == 2
    assert skipped == [
        {"id": "img7/caption2", "reason": "empty caption"},
        {"id": "img7/caption4", "reason": "caption not valid UTF-8"},
    ]
