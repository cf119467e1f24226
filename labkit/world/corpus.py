"""The pretraining corpus: short stories and dialogues in a small village.

Each document is written by :func:`write_document`, a little program whose every random choice goes
through :class:`~labkit.world.writer.Writer`. Dependencies reach across sentences: a friend's name is
repeated later, pronouns follow the person's sex, goods depend on the shop, counts of goods are
tracked through gifts (``now mia has two cookies left``) and questions at the end ask about them, so
a model has to remember who did what.
"""
from __future__ import annotations

from collections import Counter

from labkit.world import lexicon as lx
from labkit.world.writer import Doc, Writer

OPENERS = ["once upon a time ,", "long ago ,", "one morning ,"]
P_STORY = 0.6                 # share of stories; the rest are dialogues
MAX_EVENTS = 4                # a story has 1..4 events after its introduction
P_STOP = [0.0, 0.3, 0.45, 0.6]  # chance the story stops before event k+1 (k events told)
EVENTS = {"then": 0.40, "suddenly": 0.10, "that": 0.15, "later": 0.35}  # shop, weather, mood, gift


def _num(n: int) -> str:
    return lx.NUMBERS[n]


def _count(w: Writer, most: int) -> int:
    """Pick a count 1..most; small counts are likelier (weights 1/n)."""
    return 1 + w.pick([_num(n) for n in range(1, most + 1)], [1.0 / n for n in range(1, most + 1)])


def _good(w: Writer, candidates: list[str], n: int) -> str:
    """Pick one of ``candidates``, written in the form that agrees with the count ``n``."""
    return candidates[w.pick([lx.plural(g, n) for g in candidates])]


def _shopping(w: Writer, who: str, bag: dict[str, Counter]) -> None:
    w.say("went to the")
    place = w.choose(list(lx.PLACES))
    w.say(f". there {lx.pronoun(who)} bought")
    n = _count(w, 4)
    w.choose(lx.ADJECTIVES)
    good = _good(w, lx.PLACES[place], n)
    w.say(".")
    bag[who][good] += n


def _gift(w: Writer, giver: str, taker: str, bag: dict[str, Counter]) -> None:
    have = bag[giver]
    w.say("gave")
    n = _count(w, max(have.values()))
    good = _good(w, [g for g in have if have[g] >= n], n)
    w.say(f"to {taker} .")
    have[good] -= n
    bag[taker][good] += n
    left, got = have[good], bag[taker][good]
    left_words = f"no {lx.plural(good, 2)}" if left == 0 else f"{_num(left)} {lx.plural(good, left)}"
    w.say(f"now {giver} has {left_words} left and {taker} has {_num(got)} {lx.plural(good, got)} .")


def _question(w: Writer, a: str, b: str, relation: str, bag: dict[str, Counter]) -> None:
    owned = {g for p in (a, b) for g in bag[p] if bag[p][g] > 0}
    if not owned:
        w.say(f": who is {a} 's {relation} ? answer : {b} .")
        return
    w.say(": how many")
    good = _good(w, sorted(owned), 2)
    w.say("does")
    who = w.choose([p for p in (a, b) if bag[p][good] > 0])
    w.say(f"have ? answer : {_num(bag[who][good])} .")


def _story(w: Writer) -> None:
    a = w.choose(lx.NAMES)
    w.say("the")
    w.choose(lx.JOBS)
    w.say("lived near the")
    w.choose(lx.HOMES)
    w.say(f". {lx.pronoun(a)} had a")
    relation = w.choose(["friend", "sister", "brother"], [0.5, 0.25, 0.25])
    pool = {"friend": lx.NAMES, "sister": lx.WOMEN, "brother": lx.MEN}[relation]
    w.say("called")
    b = w.choose([n for n in pool if n != a])
    w.say(".")
    bag: dict[str, Counter] = {a: Counter(), b: Counter()}

    for told in range(MAX_EVENTS):
        holders = [p for p in (a, b) if bag[p].total() > 0]
        stop = P_STOP[told]
        options = {k: v * (1 - stop) for k, v in EVENTS.items() if k != "later" or holders}
        if stop:
            options.update({"question": stop / 2, "the": stop / 2})
        kind = w.choose(list(options), list(options.values()))
        if kind == "then":
            _shopping(w, w.choose([a, b]), bag)
        elif kind == "suddenly":
            w.say("it began to")
            w.choose(lx.WEATHER)
            w.say(f", so {a} and {b} stayed")
            w.choose(["inside", "home"])
            w.say(".")
        elif kind == "that":
            w.say("evening")
            who = w.choose([a, b])
            w.say("felt")
            w.choose(lx.FEELINGS)
            w.say(f", so {lx.pronoun(who)}")
            w.choose(lx.ACTIVITIES)
            w.say(".")
        elif kind == "later":
            giver = w.choose(holders)
            _gift(w, giver, b if giver == a else a, bag)
        elif kind == "question":
            _question(w, a, b, relation, bag)
            return
        else:
            w.say("end .")
            return
    w.say("the end .")


def _exchange(w: Writer, x: str, y: str) -> None:
    """x tells y where they went and what they got; y reacts."""
    w.say(f"{x} : i went to the")
    place = w.choose(list(lx.PLACES))
    w.say(f". {y} : what did you get at the {place} ? {x} : i got")
    n = _count(w, 4)
    w.choose(lx.ADJECTIVES)
    good = _good(w, lx.PLACES[place], n)
    w.say(f". {y} :")
    w.choose(["lucky you !", "how nice !", f"i love {lx.plural(good, 2)} !"])


def _dialogue(w: Writer, a: str) -> None:
    w.say(":")
    w.choose(lx.GREETINGS)
    b = w.choose([n for n in lx.NAMES if n != a])
    w.say(f"! {b} :")
    w.choose(lx.GREETINGS)
    w.say(f"{a} ! where did you go today ?")
    _exchange(w, a, b)
    w.say(f"{a} :")
    if w.choose(["bye", "and"], [0.4, 0.6]) == "bye":
        w.say(f", {b} !")
        return
    w.say(f"you , {b} ?")
    _exchange(w, b, a)
    w.say(f"{b} : bye , {a} !")


def write_document(w: Writer) -> Doc:
    """Write one document (a story or a dialogue) with ``w`` and return it."""
    weights = ([P_STORY / len(OPENERS)] * len(OPENERS)
               + [(1 - P_STORY) / len(lx.NAMES)] * len(lx.NAMES))
    opener = w.choose(OPENERS + lx.NAMES, weights)
    if opener in OPENERS:
        _story(w)
    else:
        _dialogue(w, opener)
    return w.end()
