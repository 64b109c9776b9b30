"""Routing tickets in many wordings: what a help desk's tickets say, put many ways.

The first generator had 25 sentence templates and 8 closings, and the model learned them
(routing 1.00 on held-out tickets of those templates, ~0.2 on tickets people wrote in
their own words). A router should learn which words say which problem, so this one
composes a ticket from parts, each part in many wordings:

    opener       "", "Hi,", "Dear support,", "Quick question:", ...
    problem      ~30 per category, in a help desk's everyday vocabulary
    frame        the problem as a statement, a question, a complaint, ...
    closing      an urgency cue (priority high) or a calm one (priority normal)

The original templates (vocabulary.CATEGORIES) are among the problems, so the help desk
corpus and the routing task still speak the same language.
"""

from __future__ import annotations

import random

from forgeml.quickstart.vocabulary import CALM, CATEGORIES, PRODUCTS, URGENT

PROBLEMS: dict[str, list[str]] = {
    "billing": [
        "there are two identical payments for {product} on my card",
        "I got billed twice for the same purchase",
        "my bank statement shows a charge from you I do not recognise",
        "the total on invoice {order} is higher than it should be",
        "I was overcharged for the {product}",
        "the refund for order {order} has still not reached my bank",
        "my subscription renewed and took money without asking me",
        "the promo code did not reduce my total",
        "I need an invoice with my company name and tax number",
        "the monthly fee went up and nobody told me",
        "you debited my account after I cancelled the plan",
        "I paid by bank transfer but the invoice still says unpaid",
        "there is a late payment fee I do not understand",
        "please send me a copy of the receipt for order {order}",
        "I want to change the card you charge every month",
        "the price at checkout was different from the price on the product page",
        "my payment for {order} failed but the money left my account",
        "I was charged for shipping even though it was supposed to be free",
        "the credit note for {order} never arrived",
        "can you split the cost of order {order} over two invoices",
        "the direct debit was taken on the wrong date",
        "I have been paying for a plan I never signed up for",
    ],
    "shipping": [
        "order {order} is still not here",
        "the delivery of my {product} is {days} days late",
        "the tracking page has not updated since last {weekday}",
        "the tracking says delivered but there is nothing at my door",
        "the courier never turned up",
        "my {product} is stuck at the depot",
        "the shipment went to my neighbour and they are away",
        "only part of order {order} was delivered",
        "when will my {product} be dispatched",
        "the estimated delivery date keeps moving back",
        "the driver left the parcel outside in the rain",
        "I was out when the delivery came, how do I get it redelivered",
        "the tracking number you sent does not work",
        "can I change the delivery address for order {order}",
        "my {product} was sent to an old address",
        "the delivery company says they lost my package",
        "I paid for next day delivery and it has been a week",
        "can I collect order {order} from a pickup point instead",
        "the box was delivered open and half empty",
        "nobody can tell me where my shipment is",
        "customs is holding my {product}",
        "I am still waiting for my {product} to ship",
    ],
    "returns": [
        "I want to send the {product} back",
        "the {product} came damaged and I want a new one",
        "what is the deadline to return order {order}",
        "where do I get a return label",
        "the {product} is the wrong size, can I swap it",
        "I returned the {product} two weeks ago and heard nothing",
        "you sent me the wrong item and I want to return it",
        "can I exchange the {product} for a different colour",
        "the {product} stopped working after a day and I want a replacement",
        "what is your returns policy for opened items",
        "I changed my mind about the {product}, can I return it",
        "the return pickup never happened",
        "the replacement {product} is also faulty",
        "is there a charge to post the {product} back",
        "I lost the packaging, can I still return the {product}",
        "please arrange a collection for the faulty {product}",
        "the {product} has a scratch and I want to exchange it",
        "I dropped the return at the post office, has it reached you",
        "the {product} does not match the description, I am sending it back",
        "my return for order {order} was rejected",
        "I want to swap the {product} for the bigger model",
    ],
    "account": [
        "I forgot my password and the reset link does not come",
        "my login stopped working this morning",
        "the account is locked and I cannot get in",
        "I never receive the two-factor code",
        "please update the email address on my profile",
        "someone else may have accessed my account",
        "how do I delete my account and all my data",
        "I cannot sign in with my new phone",
        "the verification email never arrived",
        "I want to change my username",
        "the password reset link says it has expired",
        "I have two accounts and want them merged",
        "my profile shows the wrong name",
        "I cannot change my phone number in the settings",
        "the site tells me that email is already registered",
        "please remove my saved card from my account",
        "I keep being logged out",
        "I want a copy of the personal data you hold on me",
        "my security questions do not work any more",
        "I signed up but the account was never activated",
        "the sign in page says my password is wrong but it is right",
    ],
    "technical": [
        "the {product} will not turn on",
        "the {product} keeps restarting by itself",
        "the app freezes when I open the {product} page",
        "my {product} drops the wifi every few minutes",
        "the {product} screen stays black",
        "the {product} shows error E{code}",
        "the latest update broke my {product}",
        "the {product} will not connect over bluetooth",
        "the battery of my {product} drains overnight",
        "the {product} is not charging any more",
        "the {product} makes a loud buzzing noise",
        "the app does not find my {product}",
        "the {product} lost all its settings after the update",
        "the touch buttons on the {product} do not respond",
        "the {product} gets very hot when in use",
        "the software on the {product} is stuck on the loading screen",
        "the {product} shows the wrong readings",
        "the firmware download for the {product} never finishes",
        "the {product} blinks red and does nothing",
        "the {product} crashes whenever I change a setting",
        "the {product} cannot find any network",
    ],
}
OPENERS = [
    "", "", "", "Hi, ", "Hello, ", "Hey, ", "Dear support, ", "Good morning, ",
    "Hi team, ", "Quick question: ", "Hello there, ", "Dear customer service, ",
]  # fmt: skip
FRAMES = [
    "{problem}.",
    "{problem}.",
    "{problem}, can you help?",
    "{problem}. What should I do?",
    "I am writing because {problem}.",
    "{problem} and I do not know why.",
    "It looks like {problem}.",
    "{problem}, please look into it.",
    "Not happy: {problem}.",
    "{problem}. Can someone check?",
    "About order {order}: {problem}.",
    "{problem}. Please advise.",
]
MORE_URGENT = [
    "I need an answer today.",
    "Please sort this out immediately!",
    "This is an emergency.",
    "We are losing money every hour this goes on.",
    "Answer as soon as possible please!",
    "This cannot wait.",
    "Critical, please respond right away.",
    "My customers are waiting on this.",
    "Urgent!!",
    "Please escalate this now.",
]
MORE_CALM = [
    "Just letting you know.",
    "Not urgent.",
    "Whenever suits you.",
    "Cheers.",
    "Have a nice day.",
    "Thank you for your time.",
    "Best wishes.",
    "When you have a moment.",
    "Many thanks.",
    "",
]
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def _fill(template: str, rng: random.Random, order: str) -> str:
    return template.format(
        product=rng.choice(PRODUCTS),
        order=order,
        code=rng.randint(100, 999),
        days=rng.randint(2, 12),
        weekday=rng.choice(WEEKDAYS),
    )


def ticket(rng: random.Random) -> tuple[str, dict[str, str]]:
    """One ticket and its label. A third of the problems come from the original
    templates, so tickets like the help desk corpus's stay in the mix."""
    category = rng.choice(sorted(PROBLEMS))
    urgent = rng.random() < 0.4
    order = f"ORD-{rng.randint(10000, 99999)}"
    pool = CATEGORIES[category] if rng.random() < 1 / 3 else PROBLEMS[category]
    problem = _fill(rng.choice(pool), rng, order)
    frame = rng.choice(FRAMES)
    if "{order}" in frame and "{order}" not in problem:
        sentence = frame.format(problem=problem, order=order)
    else:
        sentence = frame.replace("About order {order}: ", "").format(problem=problem)
    opener = rng.choice(OPENERS)
    if opener and not sentence.startswith(("I ", "I'")):
        sentence = sentence[:1].lower() + sentence[1:]
    sentence = opener + sentence if opener else _capital(sentence)
    closing = rng.choice([*URGENT, *MORE_URGENT] if urgent else [*CALM, *MORE_CALM])
    text = f"{sentence} {closing}".strip()
    return text, {"category": category, "priority": "high" if urgent else "normal"}


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]
