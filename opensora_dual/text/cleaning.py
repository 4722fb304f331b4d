"""Caption cleaning as Open-Sora v1.x does it before T5 (behaviour of ``opensora/models/text_encoder/t5.py``
``text_preprocessing`` / ``clean_caption``, which come from PixArt-alpha and DeepFloyd IF).

Re-implemented here as an ordered table of steps; the order and each pattern's effect are the upstream ones, so
captions clean to the same strings (tests/test_caption_cleaning.py pins tricky cases: URLs, HTML, CJK, emoji,
mojibake). Upstream applies ``clean_caption`` twice; ``text_preprocessing`` does the same. Upstream quirks kept:
the result of one ``strip()`` is discarded (so a leading space can survive into the quote/punctuation trims),
and ``&quot;``/``&amp`` are removed after HTML parsing has already decoded entities.
"""
import html
import re
import urllib.parse

import ftfy

# Characters upstream turns into a space when they form a run (the "bad punctuation" class).
_BAD_PUNCT = re.compile(r"[#®•©™&@·º½¾¿¡§~\)\(\]\[\}\{\|\\/\*]{1,}")

_URL_TLDS = r"(?:com|co|ru|net|org|edu|gov|it)"


def _sub(pattern, repl, flags=0):
    return re.compile(pattern, flags), repl


# Steps between the URL removal and the HTML parse are none; these run after the HTML parse (in order).
_AFTER_HTML = [
    _sub(r"@[\w\d]+\b", ""),                                   # @nickname
    # CJK strokes, katakana phonetic extensions, enclosed CJK, CJK compatibility, ext. A, Yijing hexagrams,
    # unified ideographs (U+31C0..U+9FFF minus the gaps upstream leaves alone: it removes these seven ranges)
    _sub(r"[\u31c0-\u31ef\u31f0-\u31ff\u3200-\u32ff\u3300-\u33ff\u3400-\u4dbf\u4dc0-\u4dff\u4e00-\u9fff]+", ""),
    # every kind of dash -> "-"
    _sub(r"[\u002D\u058A\u05BE\u1400\u1806\u2010-\u2015\u2E17\u2E1A\u2E3A\u2E3B\u2E40\u301C\u3030\u30A0"
         r"\uFE31\uFE32\uFE58\uFE63\uFF0D]+", "-"),
    _sub(r"[`´«»“”¨]", '"'),                                   # quotes to one standard
    _sub(r"[‘’]", "'"),
    _sub(r"&quot;?", ""),                                       # leftover entities
    _sub(r"&amp", ""),
    _sub(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}", " "),          # IP addresses
    _sub(r"\d:\d\d\s+$", ""),                                  # article ids at the end
    _sub(r"\\n", " "),                                         # a literal backslash-n
    _sub(r"#\d{1,3}\b", ""),                                   # "#123"
    _sub(r"#\d{5,}\b", ""),                                    # "#12345..."
    _sub(r"\b\d{6,}\b", ""),                                   # "123456..."
    _sub(r"[\S]+\.(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)", ""),  # file names
    _sub(r"[\"\']{2,}", r'"'),                                 # """AUSVERKAUFT"""
    _sub(r"[\.]{2,}", r" "),                                   # ellipses
    (_BAD_PUNCT, r" "),                                        # ***AUSVERKAUFT***, #AUSVERKAUFT
    _sub(r"\s+\.\s+", r" "),                                   # " . "
]

_SEPARATORS = re.compile(r"(?:\-|\_)")  # this-is-my-cute-cat / this_is_my_cute_cat: > 3 of them -> spaces

# After basic_clean (ftfy + html unescape) in the middle of the pass.
_AFTER_BASIC = [
    _sub(r"\b[a-zA-Z]{1,3}\d{3,15}\b", ""),                   # jc6640
    _sub(r"\b[a-zA-Z]+\d+[a-zA-Z]+\b", ""),                   # jc6640vc
    _sub(r"\b\d+[a-zA-Z]+\d+\b", ""),                         # 6640vc231
    _sub(r"(worldwide\s+)?(free\s+)?shipping", ""),
    _sub(r"(free\s)?download(\sfree)?", ""),
    _sub(r"\bclick\b\s(?:for|on)\s\w+", ""),
    _sub(r"\b(?:png|jpg|jpeg|bmp|webp|eps|pdf|apk|mp4)(\simage[s]?)?", ""),
    _sub(r"\bpage\s+\d+\b", ""),
    _sub(r"\b\d*[a-zA-Z]+\d+[a-zA-Z]+\d+[a-zA-Z\d]*\b", r" "),  # j2d1a2a...
    _sub(r"\b\d+\.?\d*[xх×]\d+\.?\d*\b", ""),                 # sizes 1920x1080 (latin x, cyrillic х, ×)
    _sub(r"\b\s+\:\s+", r": "),
    _sub(r"(\D[,\./])\b", r"\1 "),                            # space after , . / glued to the next word
    _sub(r"\s+", " "),
]

# The final trims (upstream runs them on the un-stripped string).
_FINAL = [
    _sub(r"^[\"\']([\w\W]+)[\"\']$", r"\1"),                  # one pair of surrounding quotes
    _sub(r"^[\'\_,\-\:;]", r""),
    _sub(r"[\'\_,\-\:\-\+]$", r""),
    _sub(r"^\.\S+$", ""),
]

_URLS = [
    _sub(r"\b((?:https?:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.]" + _URL_TLDS + r"[\w/-]*\b\/?(?!@)))", ""),
    _sub(r"\b((?:www:(?:\/{1,3}|[a-zA-Z0-9%])|[a-zA-Z0-9.\-]+[.]" + _URL_TLDS + r"[\w/-]*\b\/?(?!@)))", ""),
]


def basic_clean(text: str) -> str:
    """ftfy (mojibake, odd unicode) and two rounds of HTML unescaping, stripped."""
    text = ftfy.fix_text(text)
    text = html.unescape(html.unescape(text))
    return text.strip()


def _apply(steps, text):
    for pattern, repl in steps:
        text = pattern.sub(repl, text)
    return text


def _html_text(text: str) -> str:
    from bs4 import BeautifulSoup

    return BeautifulSoup(text, features="html.parser").text


def clean_caption(caption) -> str:
    """One pass of upstream's caption cleaner."""
    caption = urllib.parse.unquote_plus(str(caption))
    caption = caption.strip().lower()
    caption = caption.replace("<person>", "person")
    caption = _apply(_URLS, caption)
    caption = _html_text(caption)
    caption = _apply(_AFTER_HTML, caption)
    if len(_SEPARATORS.findall(caption)) > 3:
        caption = _SEPARATORS.sub(" ", caption)
    caption = basic_clean(caption)
    caption = _apply(_AFTER_BASIC, caption)
    caption = _apply(_FINAL, caption)
    return caption.strip()


def text_preprocessing(text, use_text_preprocessing: bool = True) -> str:
    """What v1.x feeds the tokenizer: ``clean_caption`` applied twice (upstream: "the exact text cleaning as was
    in the training stage"), or only lower-cased and stripped when cleaning is off."""
    if use_text_preprocessing:
        return clean_caption(clean_caption(text))
    return text.lower().strip()
