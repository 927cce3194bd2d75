"""A synthetic world: a multi-platform catalog and people with latent cross-platform tastes.

Used for the shipped demo sample, for training the default ranking head (data the project
can generate, no licence questions) and, later, for checking the feedback loop. People like
2-3 themes; each theme has items on every platform ("trail running" shoes in the shop, videos,
playlists and news), so what a person does on one platform predicts the others.

Examples
--------
>>> world = World(seed=1, items_per_theme=2)
>>> len(world.items) == len(THEMES) * len(world.platforms) * 2
True
>>> events = world.events(persons=3, events_per_person=4, start_ts=1e9)
>>> len(events), events[0]["type"] in {"view", "click", "consume", "purchase", "identify"}
(15, True)

A platform ``reworded`` shares no word with the others; the people and events stay the same:

>>> said = World(seed=1, items_per_theme=2, reworded=("news",))
>>> [(it["title"], it["description"]) for it in said.items if it["platform"] == "news"][0]
('marathon finish times fall', 'Coverage: olympic athletics final.')
>>> said.events(persons=3, events_per_person=4, start_ts=1e9) == events
True
"""

from __future__ import annotations

import random
from typing import Any

THEMES: dict[str, dict[str, list[str]]] = {
    "trail running": {
        "nouns": [
            "trail running shoes",
            "hydration vest",
            "running socks",
            "GPS sports watch",
            "headlamp for night runs",
            "compression tights",
        ],
        "words": ["ultramarathon", "mountain trails", "endurance", "race training"],
    },
    "home cooking": {
        "nouns": [
            "cast iron skillet",
            "chef's knife",
            "sourdough starter kit",
            "spice rack",
            "dutch oven",
            "pasta maker",
        ],
        "words": ["recipes", "weeknight dinners", "baking bread", "italian cuisine"],
    },
    "jazz": {
        "nouns": [
            "vinyl jazz record",
            "saxophone reeds",
            "trumpet mouthpiece",
            "upright bass strings",
            "jazz piano songbook",
            "turntable",
        ],
        "words": ["bebop", "swing", "improvisation", "blue note"],
    },
    "gardening": {
        "nouns": [
            "pruning shears",
            "raised garden bed",
            "tomato seeds",
            "watering can",
            "compost bin",
            "garden gloves",
        ],
        "words": ["vegetable garden", "spring planting", "organic soil", "houseplants"],
    },
    "science fiction": {
        "nouns": [
            "space opera novel",
            "robot model kit",
            "telescope",
            "starship poster",
            "cyberpunk graphic novel",
            "alien invasion board game",
        ],
        "words": ["galaxies", "time travel", "artificial intelligence", "dystopian future"],
    },
    "football": {
        "nouns": [
            "football boots",
            "match ball",
            "goalkeeper gloves",
            "team jersey",
            "shin guards",
            "training cones",
        ],
        "words": ["premier league", "world cup", "transfer window", "champions league"],
    },
    "photography": {
        "nouns": [
            "mirrorless camera",
            "prime lens",
            "tripod",
            "camera bag",
            "lens filter",
            "photo printer",
        ],
        "words": ["landscape photography", "portrait lighting", "street photography", "exposure"],
    },
    "yoga": {
        "nouns": [
            "yoga mat",
            "meditation cushion",
            "yoga blocks",
            "stretching strap",
            "yoga leggings",
            "singing bowl",
        ],
        "words": ["mindfulness", "breathing", "flexibility", "morning routine"],
    },
    "video games": {
        "nouns": [
            "game controller",
            "gaming headset",
            "mechanical keyboard",
            "console",
            "gaming chair",
            "retro handheld",
        ],
        "words": ["esports", "speedrun", "open world", "indie games"],
    },
    "personal finance": {
        "nouns": [
            "budget planner",
            "investing handbook",
            "calculator",
            "tax guide",
            "savings journal",
            "wallet",
        ],
        "words": ["index funds", "retirement", "saving money", "stock market"],
    },
    "electronic music": {
        "nouns": [
            "synthesizer",
            "drum machine",
            "studio headphones",
            "MIDI controller",
            "audio interface",
            "DJ mixer",
        ],
        "words": ["techno", "house music", "ambient", "festival"],
    },
    "travel": {
        "nouns": [
            "carry-on suitcase",
            "travel pillow",
            "passport holder",
            "packing cubes",
            "universal adapter",
            "city guidebook",
        ],
        "words": ["backpacking", "city breaks", "cheap flights", "road trip"],
    },
}

#: Each theme said again without one word of its name, nouns or words (and no tags): the texts
#: of a ``reworded`` platform, which only what the text encoder knows of meaning connects to
#: the other platforms' items. Six per theme: an item's title and, the next one, its description.
REWORDED: dict[str, list[str]] = {
    "trail running": [
        "marathon finish times fall",
        "olympic athletics final",
        "jogging knee injuries",
        "cross-country championship",
        "sprinter wins gold",
        "fell racing season",
    ],
    "home cooking": [
        "michelin star restaurant",
        "kitchen gadget sales",
        "family meal prep",
        "food inflation hits groceries",
        "celebrity food show",
        "vegan lunch ideas",
    ],
    "jazz": [
        "louisiana club reopens",
        "miles davis anniversary",
        "big band concert",
        "ella fitzgerald tribute",
        "smoky lounge quartet",
        "coltrane biography",
    ],
    "gardening": [
        "allotment waiting lists",
        "flower show winners",
        "hosepipe ban",
        "lawn care in drought",
        "rose growers society",
        "greenhouse harvest",
    ],
    "science fiction": [
        "star wars sequel",
        "asimov adaptation",
        "mars colony film",
        "nasa astronaut launch",
        "doctor who casting",
        "android uprising blockbuster",
    ],
    "football": [
        "striker scores hat-trick",
        "manager sacked after defeat",
        "soccer stadium expansion",
        "penalty shootout drama",
        "derby day result",
        "fifa ranking update",
    ],
    "photography": [
        "pulitzer image award",
        "instagram snapshot trends",
        "canon versus nikon",
        "wildlife picture contest",
        "darkroom film revival",
        "selfie culture",
    ],
    "yoga": [
        "wellness retreat boom",
        "pilates class opening",
        "stress relief study",
        "ashram in india",
        "calm app subscriptions",
        "spiritual health trend",
    ],
    "video games": [
        "nintendo switch sequel",
        "playstation price hike",
        "twitch streamer milestone",
        "minecraft update",
        "xbox layoffs",
        "arcade remake announced",
    ],
    "personal finance": [
        "interest rates rise",
        "pension reform",
        "mortgage costs climb",
        "credit card debt",
        "bitcoin price swings",
        "household bills squeeze",
    ],
    "electronic music": [
        "rave culture revival",
        "berlin club scene",
        "daft punk reunion",
        "ibiza summer lineup",
        "edm producer tops charts",
        "warehouse party crackdown",
    ],
    "travel": [
        "airline strike chaos",
        "tourism hotspots overcrowded",
        "holiday destination rankings",
        "airport queues",
        "hotel prices soar",
        "visa rules change",
    ],
}

TEMPLATES: dict[str, tuple[str, str]] = {
    # platform: (title, description)
    "shop": ("{noun}", "A {adj} {noun} for anyone into {theme}. Great for {word}."),
    "video": ("{word}: {adj} guide to {noun}", "A video about {theme} and {word}."),
    "music": ("{adj} {theme} playlist: {word}", "Songs and sounds for {theme} fans, {word} mood."),
    "news": ("{word} news: {adj} {noun} trend", "Latest {theme} story about {word}."),
}
ADJECTIVES = ["essential", "beginner", "pro", "budget", "classic", "ultimate", "compact", "new"]


class World:
    def __init__(
        self,
        platforms: tuple[str, ...] = ("shop", "video", "music", "news"),
        items_per_theme: int = 6,
        linked_share: float = 0.7,
        seed: int = 0,
        release_span_s: float = 0.0,
        reworded: tuple[str, ...] = (),
    ) -> None:
        """``reworded``: platforms whose items are described in :data:`REWORDED`'s words only
        (a transfer test that shared words cannot pass); the events drawn do not change."""
        if unknown := set(reworded) - set(platforms):
            raise ValueError(f"reworded platforms {sorted(unknown)} are not among {platforms}")
        self.platforms = platforms
        self.linked_share = linked_share
        self._rng = random.Random(seed)
        # its own generator: the release times must not change the events drawn
        released = random.Random(seed + 1)
        self.items: list[dict[str, Any]] = []
        self.theme_of: dict[tuple[str, str], str] = {}
        self.by_theme: dict[tuple[str, str], list[str]] = {}
        for t_idx, (theme, vocab) in enumerate(THEMES.items()):
            for platform in platforms:
                title_t, desc_t = TEMPLATES.get(platform, ("{noun}", "About {theme}: {word}."))
                for i in range(items_per_theme):
                    fill = {
                        "noun": vocab["nouns"][i % len(vocab["nouns"])],
                        "word": vocab["words"][(i + t_idx) % len(vocab["words"])],
                        "adj": ADJECTIVES[(i * 3 + t_idx) % len(ADJECTIVES)],
                        "theme": theme,
                    }
                    item_id = f"{theme.replace(' ', '-')}-{i}"
                    said = REWORDED[theme]
                    if platform in reworded:
                        title = said[i % len(said)]
                        description = f"Coverage: {said[(i + 1) % len(said)]}."
                        tags = []
                    else:
                        title, description = title_t.format(**fill), desc_t.format(**fill)
                        tags = [theme, fill["word"]]
                    self.items.append(
                        {
                            "item": item_id,
                            "platform": platform,
                            "title": title,
                            "description": description,
                            "tags": tags,
                            "attributes": {"theme": theme} if platform == "shop" else {},
                            "available": True,
                            "ts": 1_700_000_000.0
                            + len(self.items)
                            - released.uniform(0.0, release_span_s),
                        }
                    )
                    self.theme_of[(platform, item_id)] = theme
                    self.by_theme.setdefault((platform, theme), []).append(item_id)

    def events(
        self, persons: int, events_per_person: int, start_ts: float, spacing_s: float = 30.0
    ) -> list[dict[str, Any]]:
        """Interleaved events of ``persons`` people; linked people send an identify first."""
        rng = self._rng
        themes = list(THEMES)
        people = []
        for p in range(persons):
            liked = rng.sample(themes, rng.choice([1, 2, 2, 3]))
            active = rng.sample(list(self.platforms), rng.choice([1, 2, 2, 3]))
            linked = len(active) > 1 and rng.random() < self.linked_share
            people.append((f"person-{p}", liked, active, linked))
        out: list[dict[str, Any]] = []
        ts = start_ts
        n = 0
        for person, _, active, linked in people:
            if linked:
                for platform in active:
                    n += 1
                    out.append(
                        {
                            "event_id": f"sim-{n}",
                            "type": "identify",
                            "platform": platform,
                            "user": f"{platform}-user-{person}",
                            "person": person,
                            "consent": True,
                            "ts": ts,
                        }
                    )
        for _step in range(events_per_person):
            for person, liked, active, _ in people:
                ts += spacing_s / max(1, persons)
                platform = rng.choice(active)
                theme = rng.choice(liked) if rng.random() < 0.9 else rng.choice(themes)
                pool = self.by_theme[(platform, theme)]
                # Zipf-like: the first items of a theme are the popular ones.
                item = pool[min(int(rng.paretovariate(1.2)) - 1, len(pool) - 1)]
                kind = rng.choices(
                    ["view", "click", "consume" if platform != "shop" else "purchase"],
                    weights=[0.5, 0.3, 0.2],
                )[0]
                n += 1
                out.append(
                    {
                        "event_id": f"sim-{n}",
                        "type": kind,
                        "platform": platform,
                        "user": f"{platform}-user-{person}",
                        "item": item,
                        "ts": round(ts, 3),
                    }
                )
        return out
