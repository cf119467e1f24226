"""The world's words: people, places, goods, numbers. Facts here are fixed for every seed."""
from __future__ import annotations

WOMEN = ["anna", "clara", "emma", "grace", "iris", "kate", "mia", "olivia", "rosa", "tara",
         "wendy", "yara", "lily", "nina", "ella", "ruby", "sofia", "hannah", "lucy", "maya",
         "zoe", "alice", "julia", "eva"]
MEN = ["ben", "david", "felix", "henry", "jack", "leo", "noah", "paul", "sam", "victor",
       "xavier", "zack", "omar", "hugo", "finn", "max", "oscar", "tom", "adam", "luke",
       "ivan", "theo", "milo", "ethan"]
NAMES = WOMEN + MEN

JOBS = ["baker", "farmer", "teacher", "fisher", "painter", "doctor", "builder", "singer",
        "tailor", "potter", "sailor", "gardener", "miller", "weaver", "hunter", "cook"]

# Each place sells five goods; a good can be sold in two places.
PLACES: dict[str, list[str]] = {
    "market": ["apple", "pear", "egg", "carrot", "onion"],
    "bakery": ["bun", "cake", "cookie", "pie", "loaf"],
    "library": ["book", "map", "poem", "letter", "card"],
    "garden": ["rose", "tulip", "seed", "pear", "carrot"],
    "harbor": ["fish", "shell", "rope", "net", "crab"],
    "toyshop": ["kite", "ball", "doll", "drum", "puzzle"],
    "forest": ["berry", "acorn", "stick", "feather", "mushroom"],
    "beach": ["shell", "stone", "bucket", "kite", "crab"],
    "workshop": ["hammer", "nail", "saw", "rope", "box"],
    "dairy": ["cheese", "egg", "jug", "bottle", "cup"],
    "orchard": ["apple", "plum", "cherry", "pear", "basket"],
    "fair": ["ribbon", "balloon", "drum", "candle", "cake"],
}
HOMES = ["mill", "river", "castle", "bridge", "farm", "school", "church", "lake", "hill", "wood",
         "tower", "well"]
ADJECTIVES = ["big", "small", "red", "green", "fresh", "old", "shiny", "tiny", "round", "blue",
              "yellow", "heavy"]

PLURAL = {"berry": "berries", "fish": "fish", "loaf": "loaves", "box": "boxes",
          "cherry": "cherries", "cheese": "cheeses"}

NUMBERS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
           "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen"]  # a bag holds <= 16

FEELINGS = ["happy", "tired", "hungry", "sleepy", "proud", "worried", "cheerful", "bored",
            "sad", "calm", "excited", "lonely"]
ACTIVITIES = ["sang", "read", "slept", "cooked", "walked", "danced", "painted", "rested"]
WEATHER = ["rain", "snow", "hail", "storm"]
GREETINGS = ["hello", "hi", "good morning"]


def plural(good: str, n: int) -> str:
    """'apple', 1 -> 'apple'; 'apple', 2 -> 'apples'; irregular forms from PLURAL."""
    if n == 1:
        return good
    return PLURAL.get(good, good + "s")


def pronoun(name: str) -> str:
    return "she" if name in WOMEN else "he"


def possessive(name: str) -> str:
    return "her" if name in WOMEN else "his"


def goods() -> list[str]:
    """Every good in the world, in a fixed order."""
    seen: list[str] = []
    for items in PLACES.values():
        seen += [g for g in items if g not in seen]
    return seen


def all_words() -> set[str]:
    """Every word from the lists above, plural forms included."""
    words = set(NAMES + JOBS + list(PLACES) + HOMES + ADJECTIVES + NUMBERS + FEELINGS + WEATHER
                + ACTIVITIES)
    for g in goods():
        words.update({g, plural(g, 2)})
    for phrase in GREETINGS:
        words.update(phrase.split())
    return words
