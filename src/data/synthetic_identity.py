"""Synthetic source records with a truth table, for measuring identity resolution (issue 14).

Each true entity (a person, or a company with a contact) is written to one to four source
systems (``crm``, ``webshop``, ``pos``, ``callcentre``, ``b2b``), and each copy is disturbed the
way real systems disturb records: typos, nicknames, swapped name fields, missing values, a moved
address, another email or phone, re-formatted phones, accents and case. Hard negatives are built
in on purpose: households (relatives share a surname, the address, often the landline and
sometimes a family email; twins share the date of birth too), neighbours in the same street and
postcode, and sister companies with near-identical names. The truth table maps every record to
its entity, so precision and recall are counted against ground truth.

Everything is vectorised over entities and records with numpy; only the typo step runs per
disturbed string (a small share of the rows).

Examples
--------
>>> records, truth = generate_source_records(200, seed=3)
>>> set(records["source_system"]) <= set(SOURCE_SYSTEMS)
True
>>> len(records) == len(truth)
True
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

SOURCE_SYSTEMS = ("crm", "webshop", "pos", "callcentre", "b2b")

GIVEN_NAMES = {  # name -> nicknames a clerk or a customer might type instead
    "william": ("bill", "will", "liam"), "robert": ("bob", "rob", "bobby"),
    "elizabeth": ("liz", "beth", "lizzie"), "margaret": ("maggie", "peggy", "meg"),
    "katherine": ("kate", "kathy", "kat"), "james": ("jim", "jamie"),
    "richard": ("rick", "dick", "rich"), "thomas": ("tom", "tommy"),
    "michael": ("mike", "mick"), "jennifer": ("jen", "jenny"), "christopher": ("chris",),
    "alexander": ("alex", "sandy"), "victoria": ("vicky", "tori"), "edward": ("ed", "ted"),
    "anthony": ("tony",), "patricia": ("pat", "trish"), "susan": ("sue", "suzy"),
    "daniel": ("dan", "danny"), "matthew": ("matt",), "joseph": ("joe",),
    "rebecca": ("becky", "becca"), "jonathan": ("jon", "jonny"), "samuel": ("sam",),
    "nicholas": ("nick",), "benjamin": ("ben",), "charlotte": ("lottie", "charlie"),
    "frederick": ("fred", "freddie"), "josephine": ("jo", "josie"), "andrew": ("andy", "drew"),
    "deborah": ("debbie", "deb"), "stephen": ("steve",), "timothy": ("tim",),
    "zoe": (), "chloe": (), "amelia": ("millie",), "olivia": ("liv",), "isla": (), "ava": (),
    "noah": (), "oliver": ("ollie",), "george": (), "harry": (), "jack": (), "oscar": (),
    "leo": (), "freya": (), "grace": (), "sophie": (), "emily": ("em",), "lucy": (),
    "hannah": (), "laura": (), "sarah": (), "rachel": (), "peter": ("pete",), "paul": (),
    "mark": (), "david": ("dave",), "john": ("johnny", "jack"), "mary": ("molly",),
    "helen": (), "anne": ("annie",), "claire": (), "fiona": (), "gemma": (), "holly": (),
    "ian": (), "keith": (), "neil": (), "simon": (), "gareth": (), "rhys": (), "dylan": (),
    "aisha": (), "fatima": (), "mohammed": ("mo",), "omar": (), "priya": (), "raj": (),
    "anil": (), "wei": (), "mei": (), "hiroshi": (), "yuki": (), "lars": (), "ingrid": (),
    "sven": (), "joao": (), "jose": ("pepe",), "maria": (), "lucia": (), "giulia": (),
    "marco": (), "pierre": (), "amelie": (), "francois": (), "zofia": (), "jakub": (),
    "agnieszka": ("aga",), "siobhan": (), "niamh": (), "ciaran": (), "eoin": (),
}
# Accented spellings a system that keeps unicode would hold.
ACCENTED = {"zoe": "Zoë", "chloe": "Chloé", "joao": "João", "jose": "José", "amelie": "Amélie",
            "francois": "François", "zofia": "Zofía", "lucia": "Lucía"}
SURNAME_STEMS = (
    "ash", "black", "brad", "brook", "cald", "carr", "cole", "crow", "dal", "dun", "elm",
    "fair", "fox", "green", "ham", "har", "hart", "hay", "hol", "kings", "lang", "lee", "mar",
    "mil", "new", "nor", "oak", "pem", "red", "ross", "sand", "shel", "south", "stan", "stone",
    "thorn", "wal", "west", "whit", "wood", "brad", "chad", "dray", "eller", "fen", "gold",
)
SURNAME_ENDS = (
    "ford", "ton", "ley", "well", "wood", "field", "er", "son", "by", "ham", "worth", "more",
    "bridge", "combe", "stone", "wick", "dale", "gate", "hurst", "land", "man", "ridge",
    "shaw", "thorpe", "ville",
)
PLAIN_SURNAMES = (
    "smith", "jones", "taylor", "brown", "williams", "wilson", "johnson", "davies", "patel",
    "khan", "nguyen", "o'brien", "mcdonald", "murphy", "kowalski", "garcia", "rossi", "muller",
    "schmidt", "dubois", "silva", "chen", "wang", "kim", "singh", "ahmed", "ali", "evans",
    "thomas", "roberts",
)
STREET_NAMES = (
    "high", "station", "church", "park", "victoria", "green", "manor", "kings", "queens",
    "mill", "school", "north", "south", "west", "east", "london", "york", "grange", "new",
    "springfield", "windsor", "albert", "cedar", "elm", "oak", "beech", "willow", "meadow",
    "castle", "bridge", "abbey", "forest", "orchard", "river", "heath", "harbour", "market",
)
STREET_TYPES = (("Street", "St"), ("Road", "Rd"), ("Avenue", "Ave"), ("Lane", "Ln"),
                ("Drive", "Dr"), ("Close", "Cl"), ("Crescent", "Cres"), ("Place", "Pl"))
CITIES = ("London", "Manchester", "Birmingham", "Leeds", "Glasgow", "Bristol", "Liverpool",
          "Edinburgh", "Cardiff", "Belfast", "Sheffield", "Newcastle", "Nottingham", "Leicester",
          "Brighton", "Oxford", "Cambridge", "York", "Bath", "Exeter")
OUTCODES = ("SW", "SE", "NW", "N", "E", "W", "EC", "M", "B", "LS", "G", "BS", "L", "EH", "CF",
            "BT", "S", "NE", "NG", "LE", "BN", "OX", "CB", "YO", "BA", "EX")
EMAIL_DOMAINS = ("gmail.com", "outlook.com", "yahoo.co.uk", "hotmail.com", "icloud.com",
                 "btinternet.com", "proton.me")
COMPANY_WORDS = (
    "acme", "apex", "atlas", "beacon", "blue", "bright", "cedar", "crown", "delta", "eagle",
    "ever", "falcon", "global", "granite", "harbour", "horizon", "iron", "keystone", "lion",
    "maple", "meridian", "north", "nova", "oak", "orbit", "pioneer", "prime", "quantum",
    "red", "sigma", "silver", "summit", "swift", "titan", "unity", "vertex", "vista", "zen",
)
COMPANY_TRADES = ("logistics", "foods", "systems", "consulting", "engineering", "media",
                  "health", "capital", "retail", "software", "energy", "textiles", "labs")
COMPANY_FORMS = ("Ltd", "Limited", "LLP", "PLC", "Holdings Ltd", "Group Ltd")
TYPO_CHARS = np.array(list("abcdefghijklmnopqrstuvwxyz"))


@dataclass(frozen=True)
class SourceRecordsConfig:
    """Knobs of the duplication (shares of entities or records)."""

    copies_p: tuple[float, ...] = (0.68, 0.2, 0.08, 0.04)
    """P(an entity has 1, 2, 3, 4 records): mean 1.48 records, about 32 % duplicates."""
    b2b_share: float = 0.15
    household_share: float = 0.35
    """Share of people who live with relatives (same surname and address)."""
    twin_share: float = 0.02
    """Share of household members who have a twin in it (same date of birth)."""
    neighbour_share: float = 0.1
    """Share of households with a neighbour household in the same street and postcode."""
    sister_company_share: float = 0.15
    typo: float = 0.12
    nickname: float = 0.15
    swapped_names: float = 0.02
    moved: float = 0.08
    other_email: float = 0.06
    other_phone: float = 0.06
    dob_day_month_swapped: float = 0.02
    missing: dict[str, dict[str, float]] = field(default_factory=lambda: {
        "crm": {"email": 0.1, "phone": 0.15, "date_of_birth": 0.2, "street": 0.05},
        "webshop": {"phone": 0.3, "date_of_birth": 0.5, "street": 0.1},
        "pos": {"email": 0.4, "date_of_birth": 0.6, "street": 0.4, "postcode": 0.1},
        "callcentre": {"email": 0.5, "date_of_birth": 0.3, "street": 0.2},
        "b2b": {"date_of_birth": 1.0, "phone": 0.1},
    })


def _pick(rng: np.random.Generator, options, n: int, zipf: float = 0.0) -> np.ndarray:
    values = np.asarray(options, dtype=object)
    if zipf:
        weights = 1.0 / np.arange(1, len(values) + 1) ** zipf
        return values[rng.choice(len(values), n, p=weights / weights.sum())]
    return values[rng.integers(0, len(values), n)]


def _cat(*parts) -> np.ndarray:
    """Element-wise string concatenation of arrays, Series and scalars."""
    n = max(len(p) for p in parts if not isinstance(p, str))
    out = None
    for part in parts:
        text = (pd.Series([part] * n, dtype=object) if isinstance(part, str)
                else pd.Series(np.asarray(part, dtype=object))).astype(str)
        out = text if out is None else out + text
    return out.to_numpy(dtype=object)


def _distinct_given_names(given: np.ndarray, head: np.ndarray, member: np.ndarray) -> np.ndarray:
    """Given names with no two alike in one household: a relative whose drawn name is taken
    gets the next free name of the list.

    A household holds no two people with the same full name (a junior named after a parent is
    the rare exception, and not even a person can tell those two apart without the date of
    birth). The next name of the list, not a new random draw, so every other draw of the
    generator stays as it was.
    """
    names = list(GIVEN_NAMES)
    out = np.asarray(given, dtype=object).copy()
    taken: dict[int, set[str]] = {}
    for i in range(len(out)):
        household = taken.setdefault(int(head[i]), set())
        if member[i] and len(household) < len(names):
            k = names.index(out[i])
            while out[i] in household:
                k = (k + 1) % len(names)
                out[i] = names[k]
        household.add(out[i])
    return out


def _entities(
    n: int, rng: np.random.Generator, cfg: SourceRecordsConfig, is_b2b: np.ndarray | None
) -> pd.DataFrame:
    """True people and companies, households and sister companies included."""
    drawn = rng.random(n) < cfg.b2b_share
    is_b2b = drawn if is_b2b is None else np.asarray(is_b2b, dtype=bool)
    surnames = np.concatenate([
        _cat(_pick(rng, SURNAME_STEMS, n), _pick(rng, SURNAME_ENDS, n)),
        _pick(rng, PLAIN_SURNAMES, n, zipf=0.8),
    ])[np.arange(n) + n * (rng.random(n) < 0.4)]
    given = _pick(rng, list(GIVEN_NAMES), n, zipf=0.3)
    dob = (np.datetime64("1940-01-01") + rng.integers(0, 365 * 65, n)).astype("datetime64[D]")
    number = rng.integers(1, 250, n).astype(object)
    street_name = _pick(rng, STREET_NAMES, n)
    street_type = rng.integers(0, len(STREET_TYPES), n)
    city = rng.integers(0, len(CITIES), n)
    district = rng.integers(1, 40, n)
    sector = rng.integers(0, 10, n)
    unit = _cat(_pick(rng, TYPO_CHARS, n), _pick(rng, TYPO_CHARS, n))
    landline = rng.integers(1_000_000, 9_999_999, n)
    mobile = rng.integers(100_000_000, 999_999_999, n)

    # Households: a member copies surname, address and landline from its head (the row before).
    member = (rng.random(n) < cfg.household_share) & ~is_b2b
    member[0] = False
    head = np.maximum.accumulate(np.where(member, -1, np.arange(n)))  # first non-member above
    same = member & ~is_b2b[head]
    h = np.where(same, head, np.arange(n))
    for arr in (surnames, number, street_name, street_type, city, district, sector, unit,
                landline):
        arr[:] = arr[h]
    given = _distinct_given_names(given, h, same)
    twin = same & (rng.random(n) < cfg.twin_share)
    dob = np.where(twin, dob[h], dob)
    # A relative's date of birth is in another generation or a few years apart.
    gap = rng.choice([-30, -3, 3, 28], n) * 365 + rng.integers(-200, 200, n)
    dob = np.where(same & ~twin, dob[h] + gap.astype("timedelta64[D]"), dob)
    # Neighbours: another household in the same street and postcode, another number.
    neighbour = (rng.random(n) < cfg.neighbour_share) & ~same & ~is_b2b
    neighbour[0] = False
    prev = np.arange(n) - 1
    for arr in (street_name, street_type, city, district, sector, unit):
        arr[:] = np.where(neighbour, arr[prev], arr)
    number = np.where(neighbour, (number.astype(int) + rng.integers(1, 6, n)), number)
    # Shared family email: some members use the head's mailbox.
    domain = _pick(rng, EMAIL_DOMAINS, n, zipf=1.0)
    suffix = rng.integers(1, 99, n).astype(str)
    email_user = _cat(given, ".", pd.Series(surnames).str.replace("'", ""), suffix)
    family_mail = same & (rng.random(n) < 0.3)
    email_user = np.where(family_mail, email_user[h], email_user)
    domain = np.where(family_mail, domain[h], domain)

    # Companies: names, registration numbers; sister companies share the name's first words.
    company = _cat(
        pd.Series(_pick(rng, COMPANY_WORDS, n)).str.title(), " ",
        pd.Series(_pick(rng, COMPANY_TRADES, n)).str.title(), " ",
        _pick(rng, COMPANY_FORMS, n),
    )
    sister = is_b2b & (rng.random(n) < cfg.sister_company_share)
    sister[0] = False
    prev_b2b = np.maximum.accumulate(np.where(is_b2b, np.arange(n), -1))
    prev_b2b = np.concatenate([[-1], prev_b2b[:-1]])
    sister &= prev_b2b >= 0
    base = pd.Series(company[np.maximum(prev_b2b, 0)]).str.rsplit(" ", n=1).str[0]
    company = np.where(sister, _cat(base, " ", _pick(rng, ("Holdings Ltd", "Services Ltd",
                                                             "UK Ltd", "International"), n)),
                       company)
    reg = rng.integers(10_000_000, 99_999_999, n)
    company_email = _cat(given, ".", pd.Series(surnames).str.replace("'", ""), "@",
                         pd.Series(company).str.split(" ").str[0].str.lower(), ".co.uk")
    return pd.DataFrame({
        "entity": np.arange(n), "is_b2b": is_b2b, "given": given, "surname": surnames,
        "dob": dob, "number": number, "street_name": street_name, "street_type": street_type,
        "city": city, "district": district, "sector": sector, "unit": unit,
        "landline": landline, "mobile": mobile,
        "email": np.where(is_b2b, company_email, _cat(email_user, "@", domain)),
        "company": np.where(is_b2b, company, None), "reg": reg,
    })


def _typo(text: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One keyboard slip per string: a substitution, a deletion, an insertion or a swap."""
    out = text.copy()
    kinds = rng.integers(0, 4, len(text))
    pos = rng.random(len(text))
    chars = TYPO_CHARS[rng.integers(0, 26, len(text))]
    for i, s in enumerate(text):
        if not isinstance(s, str) or len(s) < 3:
            continue
        p = 1 + int(pos[i] * (len(s) - 2))
        k = kinds[i]
        if k == 0:
            out[i] = s[:p] + chars[i] + s[p + 1:]
        elif k == 1:
            out[i] = s[:p] + s[p + 1:]
        elif k == 2:
            out[i] = s[:p] + chars[i] + s[p:]
        else:
            out[i] = s[:p - 1] + s[p] + s[p - 1] + s[p + 1:]
    return out


def _nickname(given: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lookup = {name: nicks for name, nicks in GIVEN_NAMES.items() if nicks}
    r = rng.random(len(given))
    return np.array([
        lookup[g][int(r[i] * len(lookup[g]))] if g in lookup else g
        for i, g in enumerate(given)
    ], dtype=object)


def _phone_formats(national: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same UK number written the ways systems write it (E.164, national, spaced)."""
    digits = pd.Series(national.astype(str))
    style = rng.integers(0, 4, len(national))
    forms = [
        "+44" + digits,
        "0" + digits,
        "0" + digits.str[:3] + " " + digits.str[3:6] + " " + digits.str[6:],
        "+44 (0)" + digits.str[:3] + " " + digits.str[3:],
    ]
    return np.select([style == i for i in range(4)], [f.to_numpy() for f in forms])


def generate_source_records(
    n_entities: int,
    *,
    seed: int,
    entity_ids: np.ndarray | None = None,
    is_b2b: np.ndarray | None = None,
    today: dt.date = dt.date(2026, 6, 30),
    config: SourceRecordsConfig | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Source records of ``n_entities`` true customers, and the truth table behind them.

    Parameters
    ----------
    n_entities
        True customers (people and companies).
    seed
        Random seed; the same seed and size give identical records.
    entity_ids
        The customers' ids (e.g. the warehouse's ``customer_id``); default ``E00000001`` ...
    is_b2b
        Which customers are companies; default drawn with ``config.b2b_share``.
    today
        Timestamps lie in the three years before it.

    Returns
    -------
    records, truth
        ``records`` has the columns of the ``source_records`` contract; ``truth`` has
        ``record_key``, ``source_system``, ``source_record_id`` and ``entity_id``.
    """
    cfg = config or SourceRecordsConfig()
    rng = np.random.default_rng([seed, 14])
    ent = _entities(n_entities, rng, cfg, is_b2b)
    ids = (np.asarray(entity_ids, dtype=object) if entity_ids is not None
           else np.array([f"E{i:08d}" for i in range(n_entities)], dtype=object))
    copies = rng.choice(len(cfg.copies_p), n_entities, p=np.asarray(cfg.copies_p)) + 1
    rec = ent.iloc[np.repeat(np.arange(n_entities), copies)].reset_index(drop=True)
    n = len(rec)
    first = np.concatenate([[True], rec["entity"].to_numpy()[1:] != rec["entity"].to_numpy()[:-1]])
    b2b = rec["is_b2b"].to_numpy()
    person_sources = np.array(["crm", "webshop", "pos", "callcentre"], dtype=object)
    source = np.where(
        b2b, np.where(first, "b2b", _pick(rng, ("b2b", "crm", "callcentre"), n)),
        person_sources[rng.choice(4, n, p=[0.35, 0.3, 0.2, 0.15])],
    ).astype(object)
    noisy = ~first  # the first copy is the clean one; later copies drift

    def chance(p: float) -> np.ndarray:
        return noisy & (rng.random(n) < p)

    given = rec["given"].to_numpy(dtype=object).copy()
    nick = chance(cfg.nickname)
    given[nick] = _nickname(given[nick], rng)
    surname = rec["surname"].to_numpy(dtype=object).copy()
    for arr in (given, surname):
        slip = chance(cfg.typo / 2)
        arr[slip] = _typo(arr[slip], rng)
    swap = chance(cfg.swapped_names)
    given[swap], surname[swap] = surname[swap], given[swap].copy()
    # Systems write names in their own case, some with accents kept.
    style = rng.integers(0, 3, n)
    accented = pd.Series(given).map(ACCENTED).fillna(pd.Series(given)).to_numpy(dtype=object)
    given_out = np.where(style == 0, pd.Series(accented).str.title(),
                         np.where(style == 1, pd.Series(given).str.upper(),
                                  pd.Series(given).str.title()))
    surname_out = np.where(style == 1, pd.Series(surname).str.upper(),
                           pd.Series(surname).str.title())

    moved = chance(cfg.moved)
    street_type = rec["street_type"].to_numpy()
    long_form = np.array([t[0] for t in STREET_TYPES], dtype=object)
    short_form = np.array([t[1] for t in STREET_TYPES], dtype=object)
    number = rec["number"].to_numpy(dtype=object).copy()
    street_name = rec["street_name"].to_numpy(dtype=object).copy()
    city = rec["city"].to_numpy().copy()
    district = rec["district"].to_numpy().copy()
    sector = rec["sector"].to_numpy().copy()
    unit = rec["unit"].to_numpy(dtype=object).copy()
    number[moved] = rng.integers(1, 250, moved.sum())
    street_name[moved] = _pick(rng, STREET_NAMES, int(moved.sum()))
    city[moved] = rng.integers(0, len(CITIES), moved.sum())
    district[moved] = rng.integers(1, 40, moved.sum())
    sector[moved] = rng.integers(0, 10, moved.sum())
    unit[moved] = _cat(_pick(rng, TYPO_CHARS, int(moved.sum())),
                       _pick(rng, TYPO_CHARS, int(moved.sum())))
    abbreviated = rng.random(n) < 0.5
    street = _cat(number, " ", pd.Series(street_name).str.title(), " ",
                  np.where(abbreviated, short_form[street_type], long_form[street_type]))
    outcode = np.asarray(OUTCODES, dtype=object)[(city * 7 + district) % len(OUTCODES)]
    postcode = _cat(outcode, district, np.where(rng.random(n) < 0.8, " ", ""), sector,
                    pd.Series(unit).str.upper())

    email = rec["email"].to_numpy(dtype=object).copy()
    other = chance(cfg.other_email)
    email[other] = _cat(pd.Series(given[other]).str.lower(), rng.integers(100, 999, other.sum()),
                        "@", _pick(rng, EMAIL_DOMAINS, int(other.sum())))
    email = np.where(rng.random(n) < 0.15, pd.Series(email).str.upper(), email)
    use_landline = rng.random(n) < np.where(b2b, 0.7, 0.35)
    national = np.where(use_landline, 2_000_000_000 + rec["landline"].to_numpy(),
                        7_000_000_000 + rec["mobile"].to_numpy())
    other = chance(cfg.other_phone)
    national[other] = 7_000_000_000 + rng.integers(100_000_000, 999_999_999, other.sum())
    phone = _phone_formats(national, rng)

    dob = rec["dob"].to_numpy().astype("datetime64[D]")
    dob_text = pd.Series(dob.astype(str))
    flip = chance(cfg.dob_day_month_swapped) & (dob_text.str[8:].astype(int) <= 12).to_numpy()
    dob_text[flip] = dob_text[flip].str[:5] + dob_text[flip].str[8:] + "-" + dob_text[flip].str[5:7]

    today64 = np.datetime64(today.isoformat(), "s")
    created = today64 - rng.integers(30 * 86400, 3 * 365 * 86400, n).astype("timedelta64[s]")
    # A moved address is the newer record: its update is recent.
    updated = created + (rng.random(n) * (today64 - created).astype(np.int64)).astype(
        "timedelta64[s]")

    counter = pd.Series(source).groupby(source).cumcount().to_numpy() + 1
    prefix = pd.Series(source).map({"crm": "CRM-", "webshop": "WEB", "pos": "LOY",
                                    "callcentre": "CC", "b2b": "B2B-"}).to_numpy()
    record_id = _cat(prefix, pd.Series(counter).astype(str).str.zfill(7))
    records = pd.DataFrame({
        "record_key": _cat(source, ":", record_id),
        "source_system": source,
        "source_record_id": record_id,
        "given_name": given_out,
        "surname": surname_out,
        "company_name": rec["company"].to_numpy(dtype=object),
        "email": email,
        "phone": phone,
        "street": street,
        "postcode": postcode,
        "city": np.asarray(CITIES, dtype=object)[city],
        "country": "GB",
        "date_of_birth": np.where(b2b, None, dob_text.to_numpy(dtype=object)),
        "company_id": np.where(b2b, _cat("GB", rec["reg"].to_numpy()), None),
        "created_at": created,
        "updated_at": updated,
    })
    for system, shares in cfg.missing.items():
        in_system = source == system
        for column, p in shares.items():
            gone = in_system & (rng.random(n) < p) & (noisy | (column == "date_of_birth"))
            records.loc[gone, column] = None
    # Shuffle so the copies of one entity are not neighbours in the file.
    order = rng.permutation(n)
    records = records.iloc[order].reset_index(drop=True)
    truth = pd.DataFrame({
        "record_key": records["record_key"],
        "source_system": records["source_system"],
        "source_record_id": records["source_record_id"],
        "entity_id": ids[rec["entity"].to_numpy()[order]],
    })
    for col in records.columns:
        if records[col].dtype == object:
            records[col] = records[col].astype("string")
    return records, truth


TRUTH_SOURCE_RECORDS_DDL = """
CREATE OR REPLACE TABLE truth_source_records (
  record_key VARCHAR PRIMARY KEY,
  source_system VARCHAR NOT NULL,
  source_record_id VARCHAR NOT NULL,
  entity_id VARCHAR NOT NULL
)"""


def write_source_records(con, *, seed: int, today: dt.date) -> int:
    """Write the source records of every warehouse customer, and their truth, into ``con``.

    The warehouse's B2B customers are the companies.
    """
    from customer360.data.warehouse import insert_frame

    customers = con.execute(
        "SELECT customer_id, customer_type = 'B2B' AS b2b FROM customers ORDER BY customer_id"
    ).df()
    records, truth = generate_source_records(
        len(customers), seed=seed, entity_ids=customers["customer_id"].to_numpy(),
        is_b2b=customers["b2b"].to_numpy(), today=today,
    )
    insert_frame(con, "source_records", records)
    con.execute(TRUTH_SOURCE_RECORDS_DDL)
    insert_frame(con, "truth_source_records", truth)
    return len(records)
