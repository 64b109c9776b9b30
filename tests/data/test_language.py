"""Offline language identification on sentences whose language is known."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from forgeml.data.language import UNDETERMINED, detect_language, supported_languages
from forgeml.data.language_files import FORMAT, mapped_identifier, unpack


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("The quarterly report shows that revenue grew faster than we expected.", "en"),
        ("Le rapport trimestriel montre que le chiffre d'affaires a augmenté plus vite.", "fr"),
        ("Der Quartalsbericht zeigt, dass der Umsatz schneller gewachsen ist als erwartet.", "de"),
        (
            "El informe trimestral muestra que los ingresos crecieron más rápido de lo esperado.",
            "es",
        ),
        ("Il rapporto trimestrale mostra che i ricavi sono cresciuti più del previsto.", "it"),
    ],
)
def test_detects_the_language_of_a_sentence(text: str, code: str) -> None:
    detected, confidence = detect_language(text)
    assert detected == code
    assert 0.5 < confidence <= 1.0


def test_text_without_letters_is_undetermined() -> None:
    assert detect_language("") == (UNDETERMINED, 0.0)
    assert detect_language("12345 -- 67.89 %%") == (UNDETERMINED, 0.0)


def test_only_the_first_characters_are_read() -> None:
    english = "This sentence is written in plain English for the test. " * 3
    german = "Dieser Satz ist auf Deutsch geschrieben und sehr lang. " * 100
    assert detect_language(english + german, max_chars=len(english))[0] == "en"
    assert detect_language(english + german, max_chars=0)[0] == "de"


def test_supported_languages_cover_the_common_ones() -> None:
    assert {"en", "fr", "de", "es", "it", "nl", "pt", "zh", "ja"} <= set(supported_languages())


# --- the model mapped from unpacked files (language_files.py) ------------------------------

MIXED_TEXTS = [
    "The quarterly report shows that revenue grew faster than we expected.",
    "Der Quartalsbericht zeigt, dass der Umsatz schneller gewachsen ist als erwartet.",
    "Le colis n'est jamais arrivé et le suivi ne bouge plus depuis deux semaines.",
    "荷物がまだ届いていません。追跡番号を確認してください。",
    "Посылка так и не пришла, помогите пожалуйста.",
    "Mijn pakket is nooit aangekomen en niemand antwoordt op mijn e-mails.",
    "SHOUTING IN CAPITALS IS STILL ENGLISH TEXT",
    "def route(ticket): return {'category': 'billing'}  # code, not prose",
    "a",
    "Ünïcödé ăccents and emoji 🙂 in one line",
    " ".join(["word"] * 50 + ["Wort"] * 50),
]


def test_the_mapped_model_answers_as_py3langid_does(tmp_path: Path) -> None:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    in_memory = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    mapped = mapped_identifier(unpack(tmp_path / "model"), norm_probs=True)
    for text in MIXED_TEXTS:
        assert mapped.classify(text) == in_memory.classify(text), text
        assert mapped.rank(text) == in_memory.rank(text), text


def test_an_interrupted_unpack_leaves_no_model_and_the_next_one_finishes(tmp_path: Path) -> None:
    place = tmp_path / "model"
    staging = tmp_path / ".model.killed"  # what a process killed mid-unpack leaves
    staging.mkdir()
    (staging / "ptc").write_bytes(b"half")
    racing = tmp_path / ".model.racing"  # another process's unpack, still writing
    racing.mkdir()
    an_hour_ago = time.time() - 3600
    os.utime(staging, (an_hour_ago, an_hour_ago))
    assert unpack(place) == place
    assert not staging.exists() and racing.exists()
    racing.rmdir()
    assert json.loads((place / "model.json").read_text())["format"] == FORMAT
    # A second process racing to unpack the same model finds it done.
    assert unpack(place) == place
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_nowhere_to_unpack_keeps_the_model_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from forgeml.data import language, language_files

    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    monkeypatch.setattr(
        language_files, "model_directories", lambda: [blocked / "one", blocked / "two"]
    )
    identifier = language._identifier.__wrapped__()
    assert type(identifier.tk_nextmove).__name__ == "array"  # py3langid's own loading
    assert identifier.classify(MIXED_TEXTS[1])[0] == "de"
