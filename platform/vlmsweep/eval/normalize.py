"""VQA answer normalisation, the way EvalAI scores VQAv2 and TextVQA.

The rules are those of the official VQA evaluation (github.com/GT-Vision-Lab/VQA,
vqaEval.py) as packaged in MMF's EvalAIAnswerProcessor, which LLaVA-1.5 scores TextVQA
with (llava/eval/m4c_evaluator.py). In order:

1. lowercase; drop "," and "?"; split the possessive ("dog's" -> "dog 's");
   newlines and tabs become spaces; strip.
2. punctuation: a mark next to a space is deleted, one inside a word becomes a space
   ("t-shirt" -> "t shirt"); a period is deleted unless a digit follows ("3.5" stays).
3. per word: number words become digits ("two" -> "2", "none" -> "0"), the articles
   a / an / the are dropped, and apostrophe-less contractions get their apostrophe.
"""

from __future__ import annotations

import re

PUNCTUATION = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<",
               "@", "`", ",", "?", "!")
NUMBERS = {"none": "0", **{w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten".split())}}
ARTICLES = frozenset(("a", "an", "the"))

# The official contraction map. Its capitalised keys ("Im", "Ive", "Id've") are left out:
# the text is lowercased first, so they can never match. "somebody'd" -> "somebodyd" is
# backwards in the official map too, and is kept so scores agree with EvalAI's.
CONTRACTIONS = dict(pair.split() for pair in """
    aint ain't|arent aren't|cant can't|couldve could've|couldnt couldn't
    couldn'tve couldn't've|couldnt've couldn't've|didnt didn't|doesnt doesn't|dont don't
    hadnt hadn't|hadnt've hadn't've|hadn'tve hadn't've|hasnt hasn't|havent haven't|hed he'd
    hed've he'd've|he'dve he'd've|hes he's|howd how'd|howll how'll|hows how's|isnt isn't
    itd it'd|itd've it'd've|it'dve it'd've|itll it'll|let's let's|maam ma'am|mightnt mightn't
    mightnt've mightn't've|mightn'tve mightn't've|mightve might've|mustnt mustn't
    mustve must've|neednt needn't|notve not've|oclock o'clock|oughtnt oughtn't
    ow's'at 'ow's'at|'ows'at 'ow's'at|'ow'sat 'ow's'at|shant shan't|shed've she'd've
    she'dve she'd've|she's she's|shouldve should've|shouldnt shouldn't
    shouldnt've shouldn't've|shouldn'tve shouldn't've|somebody'd somebodyd
    somebodyd've somebody'd've|somebody'dve somebody'd've|somebodyll somebody'll
    somebodys somebody's|someoned someone'd|someoned've someone'd've
    someone'dve someone'd've|someonell someone'll|someones someone's|somethingd something'd
    somethingd've something'd've|something'dve something'd've|somethingll something'll
    thats that's|thered there'd|thered've there'd've|there'dve there'd've|therere there're
    theres there's|theyd they'd|theyd've they'd've|they'dve they'd've|theyll they'll
    theyre they're|theyve they've|twas 'twas|wasnt wasn't|wed've we'd've|we'dve we'd've
    weve we've|werent weren't|whatll what'll|whatre what're|whats what's|whatve what've
    whens when's|whered where'd|wheres where's|whereve where've|whod who'd|whod've who'd've
    who'dve who'd've|wholl who'll|whos who's|whove who've|whyll why'll|whyre why're
    whys why's|wont won't|wouldve would've|wouldnt wouldn't|wouldnt've wouldn't've
    wouldn'tve wouldn't've|yall y'all|yall'll y'all'll|y'allll y'all'll|yall'd've y'all'd've
    y'alld've y'all'd've|y'all'dve y'all'd've|youd you'd|youd've you'd've|you'dve you'd've
    youll you'll|youre you're|youve you've""".replace("\n", "|").split("|") if pair.strip())

# The official pattern is r"(?!<=\d)(\.)(?!\d)": its "(?!<=" is a lookahead, not the
# lookbehind it looks like, so in effect every period not followed by a digit goes.
_PERIOD = re.compile(r"\.(?!\d)")


# The official call is PERIOD_STRIP.sub("", text, re.UNICODE): re.UNICODE lands in sub's
# `count` argument, so at most 32 periods go. Kept, so long answers normalise identically.
_PERIOD_COUNT = int(re.UNICODE)
# VQA's vqaEval.py tests "digit,digit" on text that still has its commas (answer keys): then
# every mark is deleted rather than spaced. (After word_tokenize it can never fire.)
_DIGIT_COMMA = re.compile(r"(\d)(,)(\d)")


def punctuation(text: str) -> str:
    """processPunctuation of the official evaluation."""
    out = text
    comma_number = _DIGIT_COMMA.search(text) is not None
    for p in PUNCTUATION:
        # decided on the text as it came in, mark by mark, as the official loop does
        out = out.replace(p, "" if (p + " " in text or " " + p in text or comma_number) else " ")
    return _PERIOD.sub("", out, count=_PERIOD_COUNT)


def digits_articles(text: str) -> str:
    """processDigitArticle of the official evaluation: lowercase, number words to digits,
    articles dropped, contractions restored."""
    words = (NUMBERS.get(w, w) for w in text.lower().split())
    return " ".join(CONTRACTIONS.get(w, w) for w in words if w not in ARTICLES)


def normalize_answer(text: str) -> str:
    """An answer as EvalAI compares it: "The two dogs." -> "2 dogs", "Yes." -> "yes"."""
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    return digits_articles(punctuation(text.replace("\n", " ").replace("\t", " ").strip()))


def m4c_accuracy(prediction: str, answers: list[str]) -> float:
    """TextVQAAccuracyEvaluator (LLaVA's m4c_evaluator.py): both sides normalised; over the 10
    ways of leaving one human answer out, the mean of min(1, matches among the rest / 3).
    With k of 10 matching: k=1 -> 0.3, 2 -> 0.6, 3 -> 0.9, 4+ -> 1."""
    pred = normalize_answer(prediction)
    gts = [normalize_answer(a) for a in answers]
    if not gts:
        return 0.0
    hits = sum(g == pred for g in gts)
    # leaving out a matching annotator takes one match away; leaving out another keeps all
    return sum(min(1.0, (hits - (g == pred)) / 3) for g in gts) / len(gts)
