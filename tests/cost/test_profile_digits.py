"""``suite profile`` shows GFLOPs with as many digits as a report (reports.columns)."""

from reports.cost import cost_markdown


def test_tiny_gflops_keep_the_reports_digits():
    row = {"method": "tempme", "video_gmacs": 0.07468, "text_gmacs": 0.01234,
           "output_tokens": 10, "params_trainable": 1, "params_total": 2,
           "backbone": "tiny-clip", "frames": 12, "words": 32}
    text = cost_markdown([row, {**row, "video_gmacs": 4.4123}])
    assert "0.0747" in text and "0.0123" in text and "4.41" in text
