"""The phone channel's prompts (issue 16 item 5), rendered by espeak-ng as 8 kHz mono WAV files
in Asterisk's sound layout: `<sounds>/en/rocars/<name>.wav` and `<sounds>/yue/rocars/<name>.wav`
(Asterisk picks the folder by the channel's language). Idempotent: a file already present is
kept, so studio recordings put in its place are never overwritten (README, "Phone channel").

Usage: `python -m deploy.phone_prompts [SOUNDS_DIR]` (default var/sounds).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path

from kernel.errors import ConfigError
from node.phone.dialogue import prompts

RATE = 8000
DEFAULT_DIR = Path("var/sounds")
VOICES = {"en": "en", "yue": "yue"}  # Asterisk language folder -> espeak-ng voice

TEXTS: dict[str, dict[str, str]] = {
    "welcome": {
        "en": "Welcome to ROCARS bundling by phone.",
        "yue": "歡迎使用道路貨物資料系統電話綑綁服務。",
    },
    "enter-account": {
        "en": "Please key in your account number, then the hash key.",
        "yue": "請輸入你的帳戶號碼，然後按井字鍵。",
    },
    "enter-pin": {
        "en": "Please key in your six digit PIN, then the hash key.",
        "yue": "請輸入你的六位數字密碼，然後按井字鍵。",
    },
    "enter-vehicle": {
        "en": "Key in the vehicle registration mark, two keys for each character: for a letter,"
        " its key then its position on that key; for a digit, zero then the digit. Then the"
        " hash key. Or star and the vehicle's short code.",
        "yue": "請輸入車輛登記號碼，每個字元按兩個鍵：字母按所在的鍵，再按字母在鍵上的位置；"
        "數字先按零，再按該數字。然後按井字鍵。或者按星號鍵加車輛簡碼。",
    },
    "you-entered": {"en": "You entered", "yue": "你輸入嘅係"},
    "confirm-vehicle": {
        "en": "Press 1 if this is correct, or 2 to key it again.",
        "yue": "正確請按一，重新輸入請按二。",
    },
    "enter-lbcp": {
        "en": "Choose the control point. 1 Lok Ma Chau. 2 Man Kam To. 3 Sha Tau Kok."
        " 4 Shenzhen Bay. 5 Heung Yuen Wai. 6 Hong Kong Zhuhai Macao Bridge.",
        "yue": "請選擇管制站。落馬洲按一。文錦渡按二。沙頭角按三。"
        "深圳灣按四。香園圍按五。港珠澳大橋按六。",
    },
    "enter-ccrn": {
        "en": "Key in a cargo reference number, then the hash key. When you have keyed them all,"
        " press the hash key again. For an empty truck, press zero and the hash key.",
        "yue": "請輸入貨物參考編號，然後按井字鍵。全部輸入完畢，再按井字鍵。吉車請按零再按井字鍵。",
    },
    "no-input": {"en": "Sorry, nothing was keyed.", "yue": "對唔住，你未有輸入。"},
    "wrong-pin": {
        "en": "The account number or PIN is not correct.",
        "yue": "帳戶號碼或者密碼唔正確。",
    },
    "locked": {
        "en": "Phone access to this account is locked for fifteen minutes.",
        "yue": "此帳戶嘅電話服務已經鎖定十五分鐘。",
    },
    "invalid-vehicle": {
        "en": "That is not a valid registration mark.",
        "yue": "呢個唔係有效嘅車輛登記號碼。",
    },
    "unknown-short-code": {
        "en": "There is no vehicle with that short code.",
        "yue": "冇車輛用呢個簡碼。",
    },
    "invalid-choice": {"en": "That is not one of the choices.", "yue": "呢個唔係其中一個選擇。"},
    "manual-mode": {
        "en": "Manual clearance is in force at",
        "yue": "以下管制站現正實施人手清關：",
    },
    "manual-mode-action": {
        "en": "Bundling is not needed now. Bring your cargo documents and follow the officers'"
        " directions at the control point.",
        "yue": "現時毋須綑綁。請攜帶貨物文件，喺管制站聽從關員指示。",
    },
    "ccrn-accepted": {"en": "Accepted.", "yue": "已接受。"},
    "ccrn-needed": {
        "en": "Please key in at least one cargo reference number, or zero for an empty truck.",
        "yue": "請輸入最少一個貨物參考編號，吉車請按零。",
    },
    "ccrn-check-digit": {
        "en": "The check digit of that number is wrong. Please check it for a typing error.",
        "yue": "呢個編號嘅核對數字唔正確，請檢查有冇打錯。",
    },
    "ccrn-invalid": {
        "en": "A cargo reference number has sixteen digits.",
        "yue": "貨物參考編號有十六個數字。",
    },
    "ccrn-repeated": {"en": "You already keyed that number.", "yue": "你已經輸入咗呢個編號。"},
    "ccrn-unknown": {
        "en": "There is no such cargo reference number.",
        "yue": "冇呢個貨物參考編號。",
    },
    "ccrn-cancelled": {"en": "That consignment is cancelled.", "yue": "呢批貨物已經取消。"},
    "ccrn-other-lbcp": {
        "en": "That consignment is declared for another control point.",
        "yue": "呢批貨物申報咗喺另一個管制站過境。",
    },
    "ccrn-bundled": {
        "en": "That consignment is already in another bundle.",
        "yue": "呢批貨物已經綑綁咗喺另一架車。",
    },
    "ccrn-too-late": {
        "en": "That consignment has already crossed.",
        "yue": "呢批貨物已經過境。",
    },
    "too-many-ccrns": {
        "en": "That is the most one call can bundle.",
        "yue": "一個電話最多只可以綑綁咁多。",
    },
    "cross-now": {"en": "You may cross now.", "yue": "你而家可以過境。"},
    "cross-after": {"en": "You may cross after", "yue": "你可以喺以下時間之後過境："},
    "bundle-refused": {
        "en": "The bundle could not be made. Please check your numbers on the Internet service.",
        "yue": "未能完成綑綁，請用網上服務檢查你嘅資料。",
    },
    "service-unavailable": {
        "en": "The service is not available right now. Please call again shortly.",
        "yue": "服務暫時未能提供，請稍後再打嚟。",
    },
    "goodbye": {"en": "Thank you. Goodbye.", "yue": "多謝，再見。"},
    "lbcp-lmc": {"en": "Lok Ma Chau.", "yue": "落馬洲。"},
    "lbcp-mkt": {"en": "Man Kam To.", "yue": "文錦渡。"},
    "lbcp-stk": {"en": "Sha Tau Kok.", "yue": "沙頭角。"},
    "lbcp-sbc": {"en": "Shenzhen Bay.", "yue": "深圳灣。"},
    "lbcp-hyw": {"en": "Heung Yuen Wai.", "yue": "香園圍。"},
    "lbcp-hzmb": {"en": "Hong Kong Zhuhai Macao Bridge.", "yue": "港珠澳大橋。"},
}


def _resample(src: Path, dst: Path) -> None:
    """espeak-ng's 22.05 kHz 16-bit mono WAV as 8 kHz (linear interpolation; speech only)."""
    with wave.open(str(src), "rb") as w:
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
        frames = w.readframes(w.getnframes())
    if width != 2 or channels != 1:
        raise ConfigError(f"espeak-ng wrote {channels} channel(s) of {width} bytes")
    samples = memoryview(frames).cast("h")
    n = len(samples)
    out_len = max(1, n * RATE // rate)
    out = bytearray()
    for i in range(out_len):
        pos = i * (n - 1) / max(1, out_len - 1) if n > 1 else 0.0
        j = int(pos)
        frac = pos - j
        a = samples[j]
        b = samples[min(j + 1, n - 1)]
        out += int(a + (b - a) * frac).to_bytes(2, "little", signed=True)
    with wave.open(str(dst), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(bytes(out))


def render(sounds: Path, *, espeak: str | None = None) -> list[Path]:
    """Render every missing prompt in every language; the files written."""
    missing = set(prompts()) - set(TEXTS)
    if missing:
        raise ConfigError(f"no prompt text for {sorted(missing)}")
    exe = espeak or shutil.which("espeak-ng")
    if exe is None:
        raise ConfigError("espeak-ng is not installed (deploy/install.sh installs it)")
    written = []
    for lang, voice in VOICES.items():
        folder = sounds / lang / "rocars"
        folder.mkdir(parents=True, exist_ok=True)
        for name in prompts():
            dst = folder / f"{name}.wav"
            if dst.exists():
                continue
            with tempfile.TemporaryDirectory() as tmp:
                raw = Path(tmp) / "raw.wav"
                subprocess.run(
                    [exe, "-v", voice, "-w", str(raw), TEXTS[name][lang]],
                    check=True,
                    capture_output=True,
                    timeout=60,
                )
                part = dst.with_suffix(".part")
                _resample(raw, part)
                part.replace(dst)
            written.append(dst)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    sounds = Path(args[0]) if args else DEFAULT_DIR
    written = render(sounds)
    print(f"phone prompts in {sounds}: {len(written)} rendered, the rest already present")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
