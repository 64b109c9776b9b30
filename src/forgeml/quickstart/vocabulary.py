"""What the quickstart's generated help desk talks about: ticket phrasings per category,
urgency cues, products, and PII planted the way real exports carry it."""

CATEGORIES = {
    "billing": [
        "I was charged twice for {product} this month",
        "my invoice {order} shows the wrong amount",
        "why did my card get billed again for {product}",
        "please refund the duplicate payment on order {order}",
        "the price on my bill does not match the quote for {product}",
    ],
    "shipping": [
        "my order {order} has not arrived yet",
        "the tracking for {product} has not moved in a week",
        "the parcel with {product} was delivered to the wrong address",
        "when will order {order} ship",
        "the courier lost my {product}",
    ],
    "returns": [
        "I want to return the {product} from order {order}",
        "how do I send back a faulty {product}",
        "the {product} arrived broken and I need a replacement",
        "can I exchange my {product} for a different size",
        "I need a return label for order {order}",
    ],
    "account": [
        "I cannot log in to my account any more",
        "please change the email address on my account",
        "how do I reset my password",
        "my account was locked after too many attempts",
        "I want to close my account and delete my data",
    ],
    "technical": [
        "the {product} keeps disconnecting from wifi",
        "the app crashes when I open the {product} settings",
        "firmware update failed on my {product}",
        "the {product} shows error code E{code} on start",
        "my {product} will not pair with my phone",
    ],
}
URGENT = [
    "This is urgent.",
    "Please help ASAP!",
    "I need this fixed today.",
    "This is blocking my business.",
]
CALM = ["Thanks in advance.", "No rush.", "Whenever you get a chance.", "Kind regards."]
PRODUCTS = [
    "router X2",
    "smart thermostat",
    "headset Pro",
    "label printer",
    "kitchen scale",
    "e-reader",
]
NAMES = ["Anna Schmidt", "Luis García", "Mei Chen", "Tom Baker", "Fatima Ali", "Jonas Berg"]
# Valid test numbers: Luhn-valid cards and checksum-valid IBANs, so detectors must find them.
CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "3400 000000 00009"]
IBANS = ["DE89 3704 0044 0532 0130 00", "GB82WEST12345698765432", "FR1420041010050500013M02606"]
