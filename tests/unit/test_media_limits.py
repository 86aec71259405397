"""Pure maths of core.media.limits and core.music.mix (no I/O)."""

from fractions import Fraction

import pytest

from core.media import limits
from core.media.limits import (
    even_video_size,
    fit_within,
    plan_frame_timing,
    plan_telegram_photo,
    retry_bitrate,
    thumbnail_time,
    video_bitrate_for_limit,
)
from core.music.mix import soundtrack_filter


def test_telegram_limits_are_the_bot_api_ones() -> None:
    assert limits.TELEGRAM_UPLOAD_MAX_BYTES == 50 * 1024 * 1024
    assert limits.TELEGRAM_PHOTO_MAX_BYTES == 10 * 1024 * 1024
    assert limits.TELEGRAM_PHOTO_MAX_DIMENSION_SUM == 10_000
    assert limits.TELEGRAM_PHOTO_MAX_RATIO == 20


def test_photo_plan_leaves_a_normal_image_alone() -> None:
    plan = plan_telegram_photo(1024, 768)
    assert plan.adjust == "none"
    assert plan.size == (1024, 768)


def test_photo_plan_shrinks_huge_image_to_dimension_sum() -> None:
    plan = plan_telegram_photo(12000, 3000)
    assert plan.adjust == "none"
    width, height = plan.size
    assert width + height <= 10_000
    assert abs(width / height - 4.0) < 0.01


def test_photo_plan_honours_max_side() -> None:
    assert plan_telegram_photo(12000, 3000, max_side=2560).size == (2560, 640)


def test_photo_plan_pads_a_ratio_slightly_over_20() -> None:
    plan = plan_telegram_photo(5000, 200)  # 25:1
    assert plan.adjust == "pad"
    assert plan.canvas == (5000, 250)
    assert max(plan.size) / min(plan.size) <= 20


def test_photo_plan_crops_an_extreme_ratio() -> None:
    plan = plan_telegram_photo(100, 9000)  # 1:90, tall
    assert plan.adjust == "crop"
    assert plan.canvas == (100, 2000)
    assert max(plan.size) / min(plan.size) <= 20


def test_photo_plan_rejects_empty_size() -> None:
    with pytest.raises(ValueError):
        plan_telegram_photo(0, 10)


def test_fit_within_never_upscales() -> None:
    assert fit_within(100, 50, 320) == (100, 50)
    assert fit_within(2000, 1000, 320) == (320, 160)
    assert fit_within(1000, 3000, 1536) == (512, 1536)


@pytest.mark.parametrize(
    ("size", "max_side", "expected"),
    [
        ((127, 95), None, (126, 94)),
        ((128, 96), None, (128, 96)),
        ((1, 1), None, (2, 2)),
        ((3841, 2161), 1920, (1920, 1080)),
    ],
)
def test_even_video_size(
    size: tuple[int, int], max_side: int | None, expected: tuple[int, int]
) -> None:
    assert even_video_size(*size, max_side) == expected


def test_bitrate_fills_the_limit_minus_audio_and_overhead() -> None:
    bps = video_bitrate_for_limit(100.0, 50 * 1024 * 1024, audio_bps=128_000, overhead=0.0)
    assert bps == 50 * 1024 * 1024 * 8 // 100 - 128_000
    # total stays under the limit once the overhead is reserved
    bps = video_bitrate_for_limit(100.0, 50 * 1024 * 1024, audio_bps=128_000)
    assert (bps + 128_000) * 100 / 8 < 50 * 1024 * 1024 * 0.95


def test_bitrate_scales_inversely_with_duration_and_is_capped() -> None:
    short = video_bitrate_for_limit(10.0, 10_000_000, audio_bps=0, overhead=0.0)
    long = video_bitrate_for_limit(20.0, 10_000_000, audio_bps=0, overhead=0.0)
    assert short == 2 * long
    assert video_bitrate_for_limit(1.0, 10_000_000, audio_bps=0, max_bps=1000) == 1000


def test_bitrate_can_go_negative_when_audio_alone_is_too_big() -> None:
    assert video_bitrate_for_limit(3600.0, 1_000_000, audio_bps=128_000) < 0


def test_bitrate_rejects_zero_duration() -> None:
    with pytest.raises(ValueError):
        video_bitrate_for_limit(0.0, 1000, audio_bps=0)


def test_retry_bitrate_lowers_proportionally() -> None:
    assert retry_bitrate(1_000_000, 2_000, 1_000) == 450_000


def test_thumbnail_time() -> None:
    assert thumbnail_time(None) == 0.0
    assert thumbnail_time(0.6) == pytest.approx(0.3)
    assert thumbnail_time(30.0) == 1.0


def test_frame_timing_equal_durations_is_exact() -> None:
    timing = plan_frame_timing([100.0] * 6)
    assert timing.fps == 10
    assert timing.repeats == [1] * 6


def test_frame_timing_mixed_durations_repeats_frames() -> None:
    timing = plan_frame_timing([100.0, 200.0, 100.0])
    assert timing.fps == 10
    assert timing.repeats == [1, 2, 1]
    assert timing.total_frames / timing.fps == Fraction(4, 10)


def test_frame_timing_zero_durations_are_100ms() -> None:
    assert plan_frame_timing([0.0, 0.0]).repeats == [1, 1]
    assert plan_frame_timing([0.0, 0.0]).fps == 10


def test_frame_timing_unaligned_durations_keep_total_time() -> None:
    timing = plan_frame_timing([33.0, 47.0, 71.0, 1000.0])
    assert timing.fps == 30
    assert float(timing.total_frames / timing.fps) == pytest.approx(1.151, abs=1 / 30)


def test_soundtrack_filter_longer_audio_fades_video_end() -> None:
    plan = soundtrack_filter(10.0, 30.0)
    assert (plan.trim_s, plan.fade_start_s, plan.fade_s, plan.pad_to_s) == (10.0, 8.0, 2.0, 10.0)


def test_soundtrack_filter_shorter_audio_fades_its_own_end_and_pads() -> None:
    plan = soundtrack_filter(10.0, 4.0)
    assert (plan.fade_start_s, plan.fade_s, plan.pad_to_s) == (2.0, 2.0, 10.0)


def test_soundtrack_filter_very_short_clip() -> None:
    plan = soundtrack_filter(1.0, None)
    assert (plan.fade_start_s, plan.fade_s) == (0.0, 1.0)
    with pytest.raises(ValueError):
        soundtrack_filter(0.0, 3.0)
