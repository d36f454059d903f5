"""report.html of `visctl audit` in headless Chromium: it sorts and filters by class without a server, shows its
thumbnails, and hostile class and file names stay text (no markup of theirs runs)."""

from __future__ import annotations

import numpy as np
from conftest import chromium_driver

from visctl import audit_page
from visctl.output.writer import encode_image

HOSTILE = ['<img src=x onerror="window.__pwned=1">', "</script><script>window.__pwned=2</script>", "a&b \"q\" 'r'"]


def _page(folder):
    (folder / "worst").mkdir(parents=True)
    classes = [*HOSTILE, "plain"]
    rows = []
    for i in range(8):
        cls = classes[i % 4]
        name = f"worst/{i:03d}_x.png"
        (folder / name).write_bytes(encode_image(np.full((20, 30, 3), 30 * i, np.uint8)))
        rows.append({"path": f"/data/{cls}/{HOSTILE[i % 3]}{i}.png", "class": cls, "predicted_class": classes[(i + 1) % 4],
                     "correct": i % 2 == 0, "p_true": 0.5, "pointing": float(i % 2), "energy": (7 - i) / 10,
                     "iou": 0.1, "border": 0.2, "entropy": 0.9, "right_for_wrong_reason": i % 4 == 1, "thumb": name})
    per_class = [{"class": c, "label": k, "n": 2, "accuracy": 0.5, "pointing": 0.5, "energy": 0.3 + k / 10,
                  "iou": 0.1, "border": 0.2, "entropy": 0.9, "right_reason": 0.5, "right_for_wrong_reason": 1}
                 for k, c in enumerate(classes)]
    summary = {"images": 8, "overall": {"n": 8, "accuracy": 0.5, "pointing": 0.5, "energy": 0.35, "iou": 0.1,
                                        "border": 0.2, "entropy": 0.9, "right_reason": 0.5,
                                        "right_for_wrong_reason": 2},
               "per_class": per_class, "thresholds": {"pointing": 0.8}, "failed": ["pointing 0.5 < 0.8"]}
    text = audit_page.render(summary, rows, [], {"config": HOSTILE[1], "method": "gradcam"})
    (folder / "report.html").write_text(text)
    return folder / "report.html", text


def test_the_page_escapes_its_data(tmp_path):
    _, text = _page(tmp_path)
    assert text.count("<script>") == 1 and "__pwned=2</script>" not in text
    assert "<img src=x" not in text and 'onerror="' not in text


def test_report_sorts_and_filters_in_headless_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    page, _ = _page(tmp_path)
    driver = chromium_driver(logs=True)
    try:
        driver.get(page.as_uri())
        assert driver.execute_script("return window.__pwned === undefined")
        errors = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors

        def column(table, key):
            heads = [th.text for th in driver.find_elements(By.CSS_SELECTOR, f"#{table} th")]
            i = heads.index(key)
            return [tr.find_elements(By.TAG_NAME, "td")[i].text
                    for tr in driver.find_elements(By.CSS_SELECTOR, f"#{table} tbody tr")]

        # the worst table: in the given order, hostile names as text, every thumbnail loaded
        assert column("worst", "image")[0] == f"/data/{HOSTILE[0]}/{HOSTILE[0]}0.png"
        assert set(column("classes", "class")) == {*HOSTILE, "plain"}
        broken = driver.execute_script("return Array.from(document.images).filter(function(i){"
                                       "return !(i.complete && i.naturalWidth > 0);}).length")
        assert broken == 0 and len(driver.find_elements(By.CSS_SELECTOR, "#worst img")) == 8
        # sorting: a click sorts ascending, a second click descending
        head = [th for th in driver.find_elements(By.CSS_SELECTOR, "#worst th") if th.text == "energy"][0]
        head.click()
        values = [float(v) for v in column("worst", "energy")]
        assert values == sorted(values) and values[0] == 0.0
        head.click()
        assert [float(v) for v in column("worst", "energy")] == sorted(values, reverse=True)
        # filtering by class, hostile names included, in every table
        Select(driver.find_element(By.ID, "cls")).select_by_value(HOSTILE[1])
        assert set(column("worst", "class")) == {HOSTILE[1]} and len(column("worst", "class")) == 2
        assert column("classes", "class") == [HOSTILE[1]]
        Select(driver.find_element(By.ID, "cls")).select_by_value("")
        assert len(column("worst", "class")) == 8
        assert driver.execute_script("return window.__pwned === undefined")
        assert "failed: pointing 0.5 < 0.8" in driver.find_element(By.TAG_NAME, "body").text
    finally:
        driver.quit()
