"""Text helpers every part of the bot shares: normalisation and the shopper's language.

Shoppers type on phones with full-width punctuation, stray spaces, mixed case and, from Hong Kong,
Taiwan or a traditional-character keyboard, 繁體字; folding these away before any matching means the
knowledge base needs one spelling per phrase, not five. Traditional characters are folded to
simplified ones with OpenCC (the ``t2s`` table, which also maps variant characters).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import opencc

LANGUAGES = ("zh", "en")

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
_LATIN = re.compile(r"[A-Za-z]")
_LATIN_WORDS = re.compile(r"[a-z]+")
_SPACES = re.compile(r"\s+")

# Every toneless Hanyu Pinyin syllable (ü written v), for reading pinyin typed in Latin letters.
PINYIN_SYLLABLES = frozenset(
    "a ai an ang ao ba bai ban bang bao bei ben beng bi bian biao bie bin bing bo bu ca cai can cang cao ce cen ceng cha chai chan chang chao che chen cheng chi chong chou chu chua chuai chuan chuang chui chun chuo ci cong cou cu cuan cui cun cuo da dai dan dang dao de den deng di dian diao die ding diu dong dou du duan dui dun duo e ei en eng er fa fan fang fei fen feng fiao fo fou fu ga gai gan gang gao ge gei gen geng gong gou gu gua guai guan guang gui gun guo ha hai han hang hao he hei hen heng hong hou hu hua huai huan huang hui hun huo ji jia jian jiang jiao jie jin jing jiong jiu ju juan jue jun ka kai kan kang kao ke ken keng kong kou ku kua kuai kuan kuang kui kun kuo la lai lan lang lao le lei leng li lia lian liang liao lie lin ling liu lo long lou lu luan lun luo lv lve ma mai man mang mao me mei men meng mi mian miao mie min ming miu mo mou mu na nai nan nang nao ne nei nen neng ni nian niang niao nie nin ning niu nong nou nu nuan nun nuo nv nve o ou pa pai pan pang pao pei pen peng pi pian piao pie pin ping po pou pu qi qia qian qiang qiao qie qin qing qiong qiu qu quan que qun ran rang rao re ren reng ri rong rou ru rua ruan rui run ruo sa sai san sang sao se sen seng sha shai shan shang shao she shen sheng shi shou shu shua shuai shuan shuang shui shun shuo si song sou su suan sui sun suo ta tai tan tang tao te teng ti tian tiao tie ting tong tou tu tuan tui tun tuo wa wai wan wang wei wen weng wo wu xi xia xian xiang xiao xie xin xing xiong xiu xu xuan xue xun ya yan yang yao ye yi yin ying yo yong you yu yuan yue yun za zai zan zang zao ze zei zen zeng zha zhai zhan zhang zhao zhe zhen zheng zhi zhong zhou zhu zhua zhuai zhuan zhuang zhui zhun zhuo zi zong zou zu zuan zui zun zuo".split()
)
_LONGEST_SYLLABLE = max(map(len, PINYIN_SYLLABLES))
# Latin words that are pinyin too but, in a message, mean English ("he", "can", "men", "a", …):
# a message made only of these is English.
_ENGLISH_TOO = frozenset(
    "a an ai am ban bin can change chang die e en er fan gang hang he hen hi hong huang in long man "
    "me men mind ming mo na nan o ou pan pin pang ran sang sun she shen tan ten wan wen yang yo you "
    "zen".split()
)


@lru_cache(maxsize=1)
def _t2s() -> opencc.OpenCC:
    return opencc.OpenCC("t2s")


def normalise(text: str) -> str:
    """Fold width (NFKC: ``？`` -> ``?``, ``ＡＢ`` -> ``AB``), traditional characters (``發貨`` ->
    ``发货``), case and runs of whitespace."""
    text = _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip().lower()
    return _t2s().convert(text) if _CJK.search(text) else text


def pinyin_syllables(word: str) -> list[str] | None:
    """``word`` (lower-case Latin letters) split into pinyin syllables, or None when it is not
    pinyin. Longest match first, backtracking: "fahuo" -> ["fa", "huo"], "xian" -> ["xian"]."""
    if not word:
        return []
    for size in range(min(_LONGEST_SYLLABLE, len(word)), 0, -1):
        head = word[:size]
        if head in PINYIN_SYLLABLES:
            rest = pinyin_syllables(word[size:])
            if rest is not None:
                return [head, *rest]
    return None


def looks_like_pinyin(text: str) -> bool:
    """Latin text that reads as pinyin ("shenme shihou fahuo", "tuikuan"): every word splits into
    syllables and at least one is not also an English word."""
    words = _LATIN_WORDS.findall(text.lower())
    if not words:
        return False
    return all(pinyin_syllables(w) is not None for w in words) and any(w not in _ENGLISH_TOO for w in words)


def detect_language(text: str, default: str = "zh") -> str:
    """``"zh"`` when the text has any Chinese character or is pinyin, ``"en"`` when it has other
    Latin letters, else ``default`` (emoji, digits, "???": keep the conversation's language)."""
    if _CJK.search(text):
        return "zh"
    if _LATIN.search(text):
        return "zh" if looks_like_pinyin(text) else "en"
    return default
