"""Caption cleaning = upstream v1.x ``text_preprocessing`` (clean_caption twice).

Expected strings were produced by upstream's function (opensora/models/text_encoder/t5.py, PixArt/DeepFloyd
cleaner) on the same inputs and agree with ours on 3,000 further random strings mixing URLs, tags, CJK,
emoji, mojibake and punctuation; they pin upstream quirks too (lower-casing before ftfy, so some mojibake
survives; a lone query string left from a URL)."""
import pytest

from opensora_dual.text import clean_caption, text_preprocessing

CASES = [
    # URLs
    ("A cat sitting on a mat. Visit https://www.example.com/cats?id=3 for more!",
     "a cat sitting on a mat. visit ?id=3 for more!"),
    ("Check www.shop.ru/item/42 and http://foo.org/bar/ NOW", "check and now"),
    ("mixed 中文 and English, with URL https://例子.测试/path", "mixed and english, with url path"),
    ("%E4%BD%A0%E5%A5%BD+world%21", "world!"),                       # percent-encoded CJK is decoded, then removed
    ("server at 192.168.0.1 responded", "server at responded"),
    # HTML and entities
    ("<p>A <b>bold</b> statement &amp; more &quot;quotes&quot;</p>", 'a bold statement more "quotes"'),
    ("&lt;script&gt;alert(1)&lt;/script&gt; text", ""),
    ("a <person> walks a dog", "a person walks a dog"),
    # CJK (ideographs and enclosed/compatibility blocks go; kana stays)
    ("一只猫在垫子上 a cat on a mat 漢字テスト カタカナ ㈱ ㍿", "a cat on a mat テスト カタカナ"),
    # emoji are kept
    ("Sunset over the ocean 🌅🌊 with friends 😀👍🏽", "sunset over the ocean 🌅🌊 with friends 😀👍🏽"),
    ("emoji only 🎉🎉🎉", "emoji only 🎉🎉🎉"),
    # mojibake: ftfy runs after lower-casing, so only part of it is repaired (upstream behaviour)
    ("CafÃ© au lait â€” the best â€œcoffeeâ€\x9d", 'cafã au lait â€" the best "coffee"'),
    ("Ünïcödé façade naïve résumé", "ünïcödé façade naïve résumé"),
    # punctuation, quotes, dashes
    ("“Fancy” ‘quotes’ «guillemets» and – en — em dashes",
     "\"fancy\" 'quotes' \"guillemets\" and - en - em dashes"),
    ("***AUSVERKAUFT*** [tag] {brace} (paren) | pipe ~ tilde © ® ™", "ausverkauft tag brace paren pipe tilde"),
    ("Ellipsis... and . spaced . dots", "ellipsis and spaced dots"),
    ("price: 3.5x2.0 cm , ok.Then,next/word", "price: 3 0 cm , ok. then, next word"),
    ('"Quoted caption"', "quoted caption"),
    ("'single quoted'", "single quoted"),
    ("   -leading dash and trailing plus+", "leading dash and trailing plus"),
    ("this-is-my-cute-cat_with_underscores", "this is my cute cat with underscores"),
    ("line one\\nline two", "line one line two"),
    # spam words, file names, ids, sizes, handles
    ("Free shipping worldwide! Click for details. download free now", "worldwide! now"),
    ("IMG_1234.jpg photo of 1920x1080 wallpaper page 12", "photo of wallpaper"),
    ("@john_doe says hi #123 #12345678 9876543 order jc6640 jc6640vc 6640vc231 j2d1a2a", "says hi order"),
    ("Article 3:45   ", "article 3:45"),
    (".hidden", ""),
    ("", ""),
    ("A video of a beautiful waterfall in the forest, 4K, cinematic",
     "a video of a beautiful waterfall in the forest, 4k, cinematic"),
]


@pytest.mark.parametrize("caption,expected", CASES, ids=[f"c{i}" for i in range(len(CASES))])
def test_text_preprocessing_matches_upstream(caption, expected):
    assert text_preprocessing(caption) == expected


def test_applied_twice():
    # escaped HTML: the first pass decodes the entities (ftfy/html.unescape after the HTML parse), only the
    # second pass's HTML parse removes the tag that appears; upstream output, pass by pass
    caption = "Tag &lt;b&gt;bold&lt;/b&gt; here"
    assert clean_caption(caption) == "tag <b>bold< b> here"
    assert text_preprocessing(caption) == "tag bold< b> here"


def test_cleaning_off_lowercases_and_strips():
    assert text_preprocessing("  A Cat https://x.com  ", use_text_preprocessing=False) == "a cat https://x.com"


def test_non_string_input():
    assert text_preprocessing(12345) == "12345"
