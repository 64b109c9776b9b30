"""Hand-written support tickets in phrasings the quickstart's generator never uses.

The generated held-out tickets (`eval-routing.jsonl`) come from the same templates and
closings as the training tickets: they measure whether the model learned the templates.
These measure whether it learned the task: the wording is new, only the labels are the
same. Written for this purpose (2026-12-05); never used for training.

Two halves. The first 40 were written before the varied generator (phrasing.py), and
its author had read some of them while writing it: a small leak, kept for comparison
with earlier measurements. The last 40 (FRESH_TICKETS) were written after phrasing.py
was frozen and were never used to change it. Report them apart.
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

# Written after phrasing.py was frozen (2026-12-05, later the same day).
FRESH_TICKETS: list[tuple[str, str, str]] = [
    ("Still no sign of the headphones I ordered on the 3rd.", "shipping", "normal"),
    ("Your delivery guy threw the box over my fence and it's dented.", "shipping", "normal"),
    ("The website promised Thursday, it's Monday and I have nothing.", "shipping", "normal"),
    ("Is it possible to hold my order at the local post office?", "shipping", "normal"),
    ("Where in the world is my order?? Conference starts in 2 hours!", "shipping", "high"),
    ("The tracking link just says 'label created' since forever.", "shipping", "normal"),
    ("Got a text that my item is delayed, any idea how long?", "shipping", "normal"),
    ("Our shop shelves are empty because your truck never showed, act now!", "shipping", "high"),
    ("Why was I charged 49.99 when the cart said 39.99?", "billing", "normal"),
    ("A mystery payment to your company appeared on my credit card.", "billing", "normal"),
    ("Need a VAT invoice for my accountant please.", "billing", "normal"),
    ("Money was taken for a cancelled membership, give it back immediately!", "billing", "high"),
    ("The voucher didn't knock anything off the price.", "billing", "normal"),
    ("How do I pay the outstanding balance on my account?", "billing", "normal"),
    ("I see the same amount debited three times, my rent bounces tomorrow!", "billing", "high"),
    ("Could you resend last quarter's invoices to our finance address?", "billing", "normal"),
    ("The trainers pinch, can I get the next size up?", "returns", "normal"),
    ("Box arrived with a cracked screen inside, want my money back.", "returns", "normal"),
    ("What's the procedure for sending back an unopened kettle?", "returns", "normal"),
    (
        "The courier for my return didn't come, and the return window closes today!",
        "returns",
        "high",
    ),
    ("The sofa cover doesn't fit, I'd like to give it back.", "returns", "normal"),
    ("Received two of the same vase, how should I send one back?", "returns", "normal"),
    ("I posted the faulty drill back weeks ago, still waiting for a new one.", "returns", "normal"),
    ("The dress for tomorrow's wedding is torn, I need a swap right now!", "returns", "high"),
    ("Can't remember which email I registered with.", "account", "normal"),
    ("The login page just spins and never lets me in.", "account", "normal"),
    ("Got a 'new device signed in' alert that wasn't me, help fast!", "account", "high"),
    ("Please wipe all my personal details, I'm leaving.", "account", "normal"),
    ("My name is misspelled on my account - could you fix it?", "account", "normal"),
    ("Reset password email goes to an address I no longer have.", "account", "normal"),
    ("The whole team is locked out of the admin portal before our launch!", "account", "high"),
    ("How do I turn on two-step verification?", "account", "normal"),
    ("The speaker crackles at any volume above half.", "technical", "normal"),
    ("Since the update my watch shows the time an hour off.", "technical", "normal"),
    ("The printer says paper jam but there's no paper in it.", "technical", "normal"),
    (
        "Our checkout software crashed and the queue is out the door, fix it now!",
        "technical",
        "high",
    ),
    ("The camera app won't detect the doorbell any more.", "technical", "normal"),
    ("Screen flickers whenever I plug in the charger.", "technical", "normal"),
    ("All our office laptops lost network after your patch, nobody can work!", "technical", "high"),
    ("The robot vacuum just spins in circles.", "technical", "normal"),
]
