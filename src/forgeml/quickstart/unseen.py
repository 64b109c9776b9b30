"""Hand-written support tickets in phrasings the quickstart's generator never uses.

The generated held-out tickets (`eval-routing.jsonl`) come from the same templates and
closings as the training tickets: they measure whether the model learned the templates.
These measure whether it learned the task: the wording is new, only the labels are the
same. Written for this purpose (2026-12-05); never used for training.
"""

from __future__ import annotations

# (ticket, category, priority)
UNSEEN_TICKETS: list[tuple[str, str, str]] = [
    ("The package never showed up at my door.", "shipping", "normal"),
    ("Tracking has said 'in transit' for two weeks.", "shipping", "normal"),
    ("Courier left my box in the rain, where is the rest of my delivery?", "shipping", "normal"),
    ("I need the parcel by tomorrow morning or the event is ruined!", "shipping", "high"),
    ("My delivery went to my old flat instead of the new one.", "shipping", "normal"),
    ("Nothing has arrived and my client is waiting on site right now!", "shipping", "high"),
    ("Can you send the order by express instead of standard post?", "shipping", "normal"),
    ("The van came but the driver refused to hand over the box.", "shipping", "normal"),
    ("You took money from my account twice this month.", "billing", "normal"),
    ("My receipt shows a price higher than the one on your site.", "billing", "normal"),
    ("Stop charging my card immediately, I cancelled last year!", "billing", "high"),
    ("Can I get VAT details added to last month's bill?", "billing", "normal"),
    ("The discount code was not applied to what I paid.", "billing", "normal"),
    ("Our finance team needs a corrected statement before the audit today!", "billing", "high"),
    ("Why is there a fee I never agreed to on my statement?", "billing", "normal"),
    ("Please switch my payments from card to bank transfer.", "billing", "normal"),
    ("The blender came cracked, so I'd like to send it back.", "returns", "normal"),
    ("How many days do I have to give back the jacket?", "returns", "normal"),
    ("I sent the item back a month ago and still have no money, fix this now!", "returns", "high"),
    ("Which address do I ship the unwanted shoes to?", "returns", "normal"),
    ("I would like to swap the lamp for the larger model.", "returns", "normal"),
    ("The return label you emailed will not print.", "returns", "normal"),
    ("I got the wrong colour and need it exchanged before Friday's opening!", "returns", "high"),
    ("Can I return a gift without the original receipt?", "returns", "normal"),
    ("I can't sign in any more, it says my email is unknown.", "account", "normal"),
    ("Please change the phone number on my profile.", "account", "normal"),
    ("Someone else is logged into my profile, lock it right away!", "account", "high"),
    ("How do I close my customer account?", "account", "normal"),
    ("The two-step code never reaches my phone.", "account", "normal"),
    ("Merge my two customer profiles into one, please.", "account", "normal"),
    ("My colleague left and we must remove her access today!", "account", "high"),
    ("Please update the e-mail I use to sign in.", "account", "normal"),
    ("The app crashes as soon as I open the settings screen.", "technical", "normal"),
    ("Your website shows a blank page on checkout.", "technical", "normal"),
    ("Our whole store's card terminal is down, we cannot sell anything!", "technical", "high"),
    ("Bluetooth pairing fails with the speaker every time.", "technical", "normal"),
    ("The firmware update froze halfway and the device will not start.", "technical", "normal"),
    ("The scanner prints garbage characters after the last update.", "technical", "normal"),
    ("Every till in the shop shows an error, customers are queuing!", "technical", "high"),
    ("The thermostat ignores the schedule I set in the app.", "technical", "normal"),
]
