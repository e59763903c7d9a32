"""Strings for synthetic text: sign-like words, numbers, prices, codes, in the cases real scenes use."""
from __future__ import annotations

import string

_WORDS = """
open closed sale exit entrance push pull stop park parking hotel coffee shop store market bank
cafe bar restaurant pizza burger food fresh bread bakery pharmacy hospital police taxi bus
station train metro street road avenue square center city north south east west left right
welcome thank you please no smoking wifi free new best price off offer only today special
fashion beauty salon hair nails shoes bags watches jewelry phone mobile repair service
electronics books music cinema theatre museum gallery park garden school university office
floor level lift toilet ladies gentlemen information tickets sales arrivals departures gate
platform car wash fuel gas oil tea juice milk ice cream chicken rice noodles sushi grill steak
wine beer drinks menu lunch dinner breakfast daily hours monday friday sunday delivery
express mart mall plaza tower center house home family kids sport fitness gym club studio
design print copy photo camera video games toys gifts flowers pet clinic dental medical
optical glasses credit cash card atm money exchange travel tours tour airport air line
international global world star sun moon king queen royal golden silver red blue green black
white orange lucky happy smile love life style time live now sale discount save big mega
super extra ultra max plus pro tech digital smart power energy water fire light speed
danger warning caution keep out private authorised staff only emergency do not enter slow
school zone one way give way bridge tunnel port harbour beach river lake hill valley
""".split()

_CHARSETS = (string.ascii_uppercase, string.ascii_lowercase, string.digits)


def _case(rng, word: str) -> str:
    r = rng.random()
    if r < 0.45:
        return word.upper()
    if r < 0.75:
        return word.capitalize()
    return word


def _number(rng) -> str:
    kind = rng.integers(5)
    if kind == 0:
        return f"${rng.integers(1, 999)}.{rng.integers(0, 99):02d}"
    if kind == 1:
        return f"{rng.integers(1, 99)}%"
    if kind == 2:
        return "-".join(str(rng.integers(100, 999)) for _ in range(rng.integers(2, 4)))
    if kind == 3:
        return f"{rng.integers(0, 23):02d}:{rng.integers(0, 59):02d}"
    return str(rng.integers(1, 99999))


def _code(rng) -> str:
    n = int(rng.integers(2, 8))
    pool = "".join(_CHARSETS[i] for i in rng.choice(3, size=int(rng.integers(1, 3)), replace=False))
    return "".join(pool[int(i)] for i in rng.integers(len(pool), size=n))


def random_word(rng) -> str:
    """One word-like token: dictionary word (most), number / price / time, or random code."""
    r = rng.random()
    if r < 0.7:
        return _case(rng, _WORDS[int(rng.integers(len(_WORDS)))])
    if r < 0.87:
        return _number(rng)
    return _code(rng)


def random_line(rng, max_words: int = 4):
    """A list of 1..max_words words that are placed on one text line."""
    return [random_word(rng) for _ in range(int(rng.integers(1, max_words + 1)))]
