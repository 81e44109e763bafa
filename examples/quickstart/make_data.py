#!/usr/bin/env python3
"""Generates the quickstart preference data: train.jsonl and eval.jsonl (TRL standard format).

Each line is {"prompt": ..., "chosen": ..., "rejected": ...}. The prompt asks for a reply about
a topic; the chosen reply is helpful, polite and on topic; the rejected one is rude, dismissive
or off topic. The signal is carried by words (polite vs rude vocabulary, on- vs off-topic
content), drawn from varied templates and synonym lists, so even a tiny randomly initialised
model can learn token-level preferences. The eval topics never occur in train, so eval accuracy
measures generalisation to unseen prompts, not memorisation.

Pure standard library, fixed seed: running it again writes byte-identical files.

    python examples/quickstart/make_data.py   # writes next to this script
"""

import json
import random
from pathlib import Path

SEED = 20261126
TRAIN_PAIRS = 384
EVAL_PAIRS = 96
MAX_WORDS = 20  # completions stay short: well under 48 tokens with the prompt

# (topic, a short fact-like phrase used by helpful replies)
TRAIN_TOPICS = [
    ("baking bread", "the dough needs time to rise"),
    ("growing tomatoes", "they love sun and steady water"),
    ("learning guitar", "short daily practice works best"),
    ("running a marathon", "a slow build-up prevents injuries"),
    ("saving money", "a simple budget is a strong start"),
    ("writing a poem", "strong images matter more than rhyme"),
    ("training a puppy", "rewards work better than punishment"),
    ("painting with watercolor", "light layers keep the colors fresh"),
    ("planning a trip", "booking early often saves money"),
    ("learning Spanish", "speaking every day builds confidence"),
    ("making coffee", "fresh beans make a big difference"),
    ("fixing a bike tire", "a patch kit and a pump are enough"),
    ("studying for exams", "spaced review beats cramming"),
    ("keeping houseplants", "most die from too much water"),
    ("cooking rice", "rinsing the grains gives a lighter texture"),
    ("starting a blog", "a clear topic helps readers return"),
    ("playing chess", "controlling the center is a good habit"),
    ("sleeping better", "a regular bedtime helps a lot"),
    ("writing a resume", "short clear bullet points stand out"),
    ("learning to swim", "calm breathing comes first"),
    ("birdwatching", "early mornings are the busiest time"),
    ("knitting a scarf", "thick yarn makes a quick first project"),
    ("camping in the woods", "a dry tent makes every night better"),
    ("making pizza", "a very hot oven gives a crisp crust"),
    ("learning to code", "small projects teach the most"),
    ("meditating", "five quiet minutes a day is plenty"),
    ("taking photos", "good light matters more than the camera"),
    ("cleaning a kitchen", "working top to bottom saves time"),
    ("brewing tea", "green tea likes water below boiling"),
    ("hiking in the mountains", "layers keep you warm and dry"),
    ("public speaking", "practice out loud before the day"),
    ("composting", "a mix of greens and browns works well"),
    ("learning to draw", "simple shapes build every figure"),
    ("repairing a shelf", "wall anchors hold the weight"),
    ("writing a letter", "a warm opening sets the tone"),
    ("making soup", "a good stock carries the flavor"),
    ("keeping a journal", "a few lines each night is enough"),
    ("stretching", "gentle holds beat fast bouncing"),
    ("reading more books", "carrying a book makes it easy"),
    ("organizing a closet", "sorting by season frees space"),
    ("caring for a cat", "fresh water and play keep them happy"),
    ("building a birdhouse", "untreated wood is safest for birds"),
    ("making a smoothie", "frozen fruit gives a thick texture"),
    ("learning to skate", "bent knees keep your balance"),
    ("hosting a dinner", "a simple menu keeps you relaxed"),
    ("setting goals", "small steps make big goals reachable"),
    ("riding a bike in traffic", "bright lights help drivers see you"),
    ("sewing a button", "a double thread holds much longer"),
]

EVAL_TOPICS = [
    ("fishing at a lake", "patience and quiet water help"),
    ("making pancakes", "a rested batter gives fluffy results"),
    ("learning piano", "slow practice builds clean playing"),
    ("planting a tree", "a wide hole helps the roots spread"),
    ("writing a story", "a clear goal for the hero drives the plot"),
    ("doing yoga", "steady breathing guides each pose"),
    ("washing a car", "two buckets keep grit off the paint"),
    ("learning French", "short daily lessons add up fast"),
    ("building a snowman", "wet snow packs best"),
    ("roasting vegetables", "a hot oven makes them sweet"),
    ("walking a dog", "a steady route keeps dogs calm"),
    ("drawing a map", "a simple legend makes it readable"),
    ("making lemonade", "fresh lemons taste the brightest"),
    ("juggling", "start with two balls first"),
    ("packing a suitcase", "rolling clothes saves space"),
    ("keeping bees", "calm slow moves keep the bees calm"),
]

PROMPTS = [
    "Can you tell me about {t}?",
    "I want to get better at {t}. Any tips?",
    "What should a beginner know about {t}?",
    "Could you help me with {t}?",
    "Give me one piece of advice on {t}.",
    "Why do people enjoy {t}?",
    "I am nervous about {t}. What do you think?",
    "How do I start {t}?",
]

OPENERS = ["Sure!", "Of course!", "Happy to help!", "Great question!", "Gladly!", "Certainly!"]
CLOSERS = [
    "Good luck, you can do it!",
    "I hope this helps!",
    "Enjoy it and have fun!",
    "Feel free to ask more.",
    "You will do great!",
    "Thanks for asking!",
]
HELPFUL = [
    "{o} With {t}, {f}.",
    "{o} A useful tip for {t}: {f}. {c}",
    "{o} For {t}, remember that {f}. {c}",
    "{o} Many people find that {f}. {c}",
    "{o} {F}, so start small and be patient. {c}",
    "{o} The key to {t} is simple: {f}.",
    "{o} I am glad you asked. {F}. {c}",
]

RUDE_OPENERS = ["Ugh.", "Whatever.", "No.", "Seriously?", "Meh.", "Go away."]
RUDE = [
    "{r} {T} is boring and so is this question.",
    "{r} Figure out {t} yourself, I do not care.",
    "{r} Stop asking me stupid questions.",
    "{r} Nobody cares about {t}, just give up.",
    "{r} That is a dumb idea, forget about it.",
    "{r} I refuse to waste my time on {t}.",
    "{r} You will fail at {t} anyway, so why bother?",
    "{r} Ask someone else, I am not interested.",
]
OFF_TOPIC = [
    "Bananas are purple on Tuesdays and the moon is cheese.",
    "My favorite number is seven and clouds are loud.",
    "The printer ate my socks again this morning.",
    "Penguins should run the post office, honestly.",
    "I had a sandwich once and it was a sandwich.",
    "Random fact: spoons dream of forks at night.",
    "Whatever, the weather is green and my shoes hum.",
    "Let us talk about my lawn instead, it is mowed.",
]


def helpful(rng, topic, fact):
    """A polite on-topic reply of at most MAX_WORDS words (redrawn until it fits)."""
    while True:
        reply = rng.choice(HELPFUL).format(
            o=rng.choice(OPENERS),
            c=rng.choice(CLOSERS),
            t=topic,
            f=fact,
            F=fact[0].upper() + fact[1:],
        )
        if len(reply.split()) <= MAX_WORDS:
            return reply


def unhelpful(rng, topic):
    if rng.random() < 0.3:
        return rng.choice(OFF_TOPIC)
    template = rng.choice(RUDE)
    return template.format(
        r=rng.choice(RUDE_OPENERS), t=topic, T=topic[0].upper() + topic[1:]
    )


def pairs(rng, topics, count):
    """`count` pairs cycling over every (topic, prompt) combination in a shuffled order."""
    combos = [(topic, fact, prompt) for topic, fact in topics for prompt in PROMPTS]
    rng.shuffle(combos)
    out = []
    for i in range(count):
        topic, fact, prompt = combos[i % len(combos)]
        out.append(
            {
                "prompt": prompt.format(t=topic),
                "chosen": helpful(rng, topic, fact),
                "rejected": unhelpful(rng, topic),
            }
        )
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main():
    assert not {t for t, _ in TRAIN_TOPICS} & {t for t, _ in EVAL_TOPICS}
    rng = random.Random(SEED)
    here = Path(__file__).resolve().parent
    train = pairs(rng, TRAIN_TOPICS, TRAIN_PAIRS)
    evaluation = pairs(rng, EVAL_TOPICS, EVAL_PAIRS)
    write_jsonl(here / "train.jsonl", train)
    write_jsonl(here / "eval.jsonl", evaluation)
    print(f"wrote {len(train)} train and {len(evaluation)} eval pairs to {here}")


if __name__ == "__main__":
    main()
