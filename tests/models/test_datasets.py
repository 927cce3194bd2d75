"""Dataset readers on tiny synthetic files: no /work/shared needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models.datasets import AMAZON_STEP_S, read_amazon, read_generic, read_movielens
from models.errors import DatasetError
from models.events import EventType


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_generic_csv_sorted_by_time_stable(tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", "item,platform,text\na,shop,red boots\nb,shop,socks\n"
                  "x,video,boots review\n")
    events = write(tmp_path / "events.csv", "time,platform,person,item,type,value\n"
                   "5,shop,p1,a,purchase,\n1,video,p1,x,,\n5,shop,p2,b,rating,4.5\n")
    ds = read_generic(events, items)
    assert [(e.ts, e.item) for e in ds.events] == [(1.0, "x"), (5.0, "a"), (5.0, "b")]
    assert ds.events[0].type is EventType.CONSUME  # default type
    assert ds.events[2].value == 4.5
    assert ds.platforms == ["shop", "video"]
    assert ds.catalog_sizes() == {"shop": 2, "video": 1}
    assert all(ds.evaluated)
    assert ds.items[0].text() == "red boots"


def test_generic_train_events_are_merged_by_time_and_learned_from_only(tmp_path: Path) -> None:
    items = write(tmp_path / "items.csv", "item,platform,text\na,shop,boots\nb,shop,socks\n")
    header = "time,platform,person,item,type,value\n"
    events = write(tmp_path / "events.csv", header + "2,shop,p1,a,,\n5,shop,p1,b,,\n")
    train = write(tmp_path / "train.csv", header + "5,shop,q,a,,\n1,shop,q,b,,\n9,shop,q,b,,\n")
    ds = read_generic(events, items, train_path=train)
    got = [(e.ts, e.user, flag) for e, flag in zip(ds.events, ds.evaluated, strict=True)]
    # on a tie (time 5) the learn-only event comes first
    assert got == [(1.0, "q", False), (2.0, "p1", True), (5.0, "q", False), (5.0, "p1", True),
                   (9.0, "q", False)]
    assert len({e.event_id for e in ds.events}) == 5
    assert any("learned from only" in note for note in ds.notes)
    with pytest.raises(DatasetError, match=r"train file .* does not exist"):
        read_generic(events, items, train_path=tmp_path / "nope.csv")


def test_generic_jsonl(tmp_path: Path) -> None:
    items = write(tmp_path / "items.jsonl", json.dumps(
        {"item": "a", "platform": "shop", "text": "boots"}) + "\n")
    events = write(tmp_path / "events.jsonl", json.dumps(
        {"time": 3, "platform": "shop", "person": "p", "item": "a", "type": "click"}) + "\n")
    ds = read_generic(events, items)
    assert ds.events[0].type is EventType.CLICK and ds.events[0].user == "p"


@pytest.mark.parametrize(
    ("events", "message"),
    [
        ("time,platform,person,item\n1,shop,p1,zzz\n", "not in items"),
        ("time,platform,person,item\n,shop,p1,a\n", "missing 'time'"),
        ("time,platform,person,item,type\n1,shop,p1,a,search\n", "names no item"),
        ("time,platform,person,item,type\n1,shop,p1,a,dance\n", "dance"),
        ("time,platform,person,item,type,value\n1,shop,p1,a,rating,9\n", "invalid event"),
    ],
)
def test_generic_errors_name_the_line(tmp_path: Path, events: str, message: str) -> None:
    items = write(tmp_path / "items.csv", "item,platform,text\na,shop,boots\n")
    path = write(tmp_path / "events.csv", events)
    with pytest.raises(DatasetError, match=message) as e:
        read_generic(path, items)
    assert "events.csv:2" in str(e.value)


def test_missing_files_and_dirs_are_clear(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        read_generic(tmp_path / "nope.csv", tmp_path / "items.csv")
    with pytest.raises(DatasetError, match=r"MovieLens data not found at .*nowhere.*--data"):
        read_movielens(tmp_path / "nowhere")
    with pytest.raises(DatasetError, match="Amazon Arts-Office data not found"):
        read_amazon(tmp_path / "nowhere")


def make_movielens(root: Path) -> Path:
    root.mkdir()
    write(root / "movies.csv", 'movieId,title,genres\n1,Toy Story (1995),Animation|Comedy\n'
          '2,"Heat, The (1995)",Action|Crime\n3,Nothing,(no genres listed)\n')
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,20\n1,2,3.5,10\n"
          "2,1,5.0,15\n2,3,2.0,30\n")
    write(root / "tags.csv", "userId,movieId,tag,timestamp\n1,1,Pixar,5\n2,1,pixar,6\n"
          "2,2,heist,7\n")
    return root


def test_movielens(tmp_path: Path) -> None:
    ds = read_movielens(make_movielens(tmp_path / "ml"))
    assert ds.platforms == ["movies"]
    assert [(e.user, e.item, e.ts) for e in ds.events] == [
        ("u1", "2", 10.0), ("u2", "1", 15.0), ("u1", "1", 20.0), ("u2", "3", 30.0)]
    assert ds.evaluated == [False, True, True, False]  # ratings >= 4
    assert all(e.type is EventType.RATING for e in ds.events)
    texts = {it.item: it.text() for it in ds.items}
    assert texts["1"] == "Toy Story (1995). Animation Comedy pixar"
    assert texts["2"] == "Heat, The (1995). Action Crime heist"
    assert texts["3"] == "Nothing"


def test_movielens_ratings_in_one_second_are_not_in_movie_id_order(tmp_path: Path) -> None:
    root = make_movielens(tmp_path / "ml")
    movies = "".join(f"{m},Movie {m} (2000),Drama\n" for m in range(1, 21))
    write(root / "movies.csv", "movieId,title,genres\n" + movies)
    ratings = "".join(f"1,{m},4.0,100\n" for m in range(1, 21))  # the file lists them by id
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n" + ratings + "1,1,3.0,50\n")
    order = [e.item for e in read_movielens(root).events]
    assert order[0] == "1" and sorted(order[1:], key=lambda i: int(i or 0)) == [
        str(m) for m in range(1, 21)
    ]
    assert order[1:] != sorted(order[1:], key=lambda i: int(i or 0))  # not the file's id order
    assert order == [e.item for e in read_movielens(root).events]  # but always the same


def test_movielens_unknown_movie(tmp_path: Path) -> None:
    root = make_movielens(tmp_path / "ml")
    write(root / "ratings.csv", "userId,movieId,rating,timestamp\n1,99,4.0,20\n")
    with pytest.raises(DatasetError, match="unknown movie 99"):
        read_movielens(root)


def make_amazon(root: Path) -> Path:
    root.mkdir()
    header = "idBefore,item_title,idAfter,item_attribute\n"
    write(root / "item_listA_F.csv", header + "".join(
        f"{i},arts thing {i},{i},arts crafts\n" for i in range(4)))
    write(root / "item_listO_AA_F.csv", header + "".join(
        f"{i},office thing {i},{18639 + i},office products\n" for i in range(4)))
    # train user 0: history [0, 18639], last items 1 (arts) and 18640 (office)
    write(root / "train_F2.txt",
          "0\t2\t0|0|0\t18639|1|1\t18640|2|2\t\n0\t2\t0|0|0\t18639|1|1\t1|2|2\t\n")
    # evaluated user 9: history [2, 18641, 3], last 18642 (office) and 1 (arts)
    write(root / "valid_F2.txt",
          "9\t3\t2|0|0\t18641|1|1\t3|2|2\t18642|3|3\t\n9\t3\t2|0|0\t18641|1|1\t3|2|2\t1|3|3\t\n")
    return root


def test_amazon_round_robin(tmp_path: Path) -> None:
    ds = read_amazon(make_amazon(tmp_path / "amz"))
    assert ds.catalog_sizes() == {"arts": 4, "office": 4}
    stream = [(e.user, e.platform, e.item, e.ts / AMAZON_STEP_S, ev)
              for e, ev in zip(ds.events, ds.evaluated, strict=True)]
    assert stream == [
        ("u0", "arts", "0", 0, False), ("u9", "arts", "2", 0, True),
        ("u0", "office", "18639", 1, False), ("u9", "office", "18641", 1, True),
        ("u0", "arts", "1", 2, False), ("u9", "arts", "3", 2, True),  # train: Arts last first
        ("u0", "office", "18640", 3, False),
    ]
    assert sorted((e.user, e.platform, e.item) for e in ds.heldout) == [
        ("u9", "arts", "1"), ("u9", "office", "18642")]
    assert all(e.type is EventType.PURCHASE for e in ds.events)
    assert ds.limit(3).heldout == [] and len(ds.limit(3).events) == 3


def test_amazon_malformed(tmp_path: Path) -> None:
    root = make_amazon(tmp_path / "amz")
    write(root / "valid_F2.txt", "9\t5\t2|0|0\t18641|1|1\n")
    with pytest.raises(DatasetError, match="length 5 but 2 items"):
        read_amazon(root)
    with pytest.raises(DatasetError, match=r"split 'test\.txt'"):
        read_amazon(root, split="test.txt")


def test_amazon_learns_from_the_other_splits_histories(tmp_path: Path) -> None:
    root = make_amazon(tmp_path / "amz")
    # test user 5: history [0], last 18639 (office) and 2 (arts)
    write(root / "test_F2.txt", "5\t1\t0|0|0\t18639|1|1\t\n5\t1\t0|0|0\t2|1|1\t\n")
    ds = read_amazon(root, split="test_F2.txt")
    stream = [(e.user, e.item, ev) for e, ev in zip(ds.events, ds.evaluated, strict=True)]
    # valid user 9's history is learned from, not its held-out last items (1, 18642)
    assert [(u, i) for u, i, ev in stream if u == "u9"] == [("u9", "2"), ("u9", "18641"),
                                                           ("u9", "3")]
    assert {u for u, _, ev in stream if ev} == {"u5"}
    assert stream[:3] == [("u0", "0", False), ("u9", "2", False), ("u5", "0", True)]
    assert sorted(e.item or "" for e in ds.heldout) == ["18639", "2"]
    assert ds.notes[1] == (
        "learned from: train_F2.txt (1 users, histories + both last items), "
        "valid_F2.txt (1 users, histories); evaluated: test_F2.txt (1 users)"
    )
    # evaluating the train split: its users are ranked, not learned from first
    on_train = read_amazon(root, split="train_F2.txt")
    assert {e.user for e, ev in zip(on_train.events, on_train.evaluated, strict=True) if ev} == {
        "u0"
    }
    assert on_train.notes[1] == (
        "learned from: test_F2.txt (1 users, histories), valid_F2.txt (1 users, histories); "
        "evaluated: train_F2.txt (1 users)"
    )
    # the evaluated split, by default, learns from test_F2's histories in turn
    valid = read_amazon(root)
    assert [e.item for e in valid.events if e.user == "u5"] == ["0"]
    assert sorted(e.user for e in valid.heldout) == ["u9", "u9"]
    assert [e.user for e in read_amazon(root, others=[]).events].count("u5") == 0
    # a split given by path elsewhere: the folder's own splits are the others
    elsewhere = tmp_path / "hidden"
    elsewhere.mkdir()
    (root / "test_F2.txt").rename(elsewhere / "test_F2.txt")
    moved = read_amazon(root, split=str(elsewhere / "test_F2.txt"))
    assert [(e.user, e.item) for e in moved.events] == [(u, i) for u, i, _ in stream]
    write(elsewhere / "test_F2.txt", "9\t1\t0|0|0\t18639|1|1\t\n9\t1\t0|0|0\t2|1|1\t\n")
    with pytest.raises(DatasetError, match="share users"):
        read_amazon(root, split=str(elsewhere / "test_F2.txt"))


@pytest.mark.parametrize(
    ("items", "events", "message"),
    [
        # a text with an unquoted comma: its tail would have been dropped
        ("item,platform,text\na,shop,red, hiking boots\n", None, r"items\.csv:2: 4 fields but"),
        ("item,platform,text\na,shop,boots\nb,shop,socks\na,shop,again\n", None,
         r"items\.csv:4: item 'a' of 'shop' is listed twice \(first on line 2\)"),
        (None, "time,platform,person,item\n", r"events\.csv holds no events"),
        # item x:y of shop and item y of shop:x would be one key, shop:x:y
        ("item,platform,text\na,shop,boots\ny,shop:x,socks\n", None,
         r"items\.csv:3: invalid item: String should match pattern"),
        (None, "time,platform,person,item\n1,shop,p1,a,extra\n", r"events\.csv:2: 5 fields"),
        # line numbers are the file's: blank lines and a quoted multi-line text count
        ("item,platform,text\nb,shop,\"two\nlines\"\n\na,shop,boots\nc,shop,\n", None,
         r"items\.csv:6: missing 'text'"),
    ],
)
def test_generic_files_that_would_be_misread_are_refused(
    tmp_path: Path, items: str | None, events: str | None, message: str
) -> None:
    items_path = write(tmp_path / "items.csv", items or "item,platform,text\na,shop,boots\n")
    events_path = write(
        tmp_path / "events.csv", events or "time,platform,person,item\n1,shop,p1,a\n"
    )
    with pytest.raises(DatasetError, match=message):
        read_generic(events_path, items_path)


def test_generic_reads_a_byte_order_mark_and_refuses_a_list_value(tmp_path: Path) -> None:
    items = tmp_path / "items.csv"
    items.write_bytes("\ufeffitem,platform,text\na,shop,boots\n".encode())
    events = write(tmp_path / "events.csv", "time, platform, person, item\n1,shop,p1,a\n")
    assert [it.item for it in read_generic(events, items).items] == ["a"]  # spaced header too
    write(events, "time,platform,person,item,value\n1,shop,p1,a,good\n")
    with pytest.raises(DatasetError, match=r"events\.csv:2: 'value': could not convert"):
        read_generic(events, items)
    jsonl = write(tmp_path / "events.jsonl", json.dumps(
        {"time": 1, "platform": "shop", "person": "p", "item": "a", "type": "rating",
         "value": [4]}) + "\n")
    with pytest.raises(DatasetError, match=r"events\.jsonl:1:"):
        read_generic(jsonl, items)


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("tags.csv", "userId,movie,tag,timestamp\n1,1,pixar,5\n", r"tags\.csv:2: bad tag row"),
        ("movies.csv", "movieId,title,genres\n1,A (1995),Drama\n1,B (1996),Drama\n",
         r"movies\.csv:3: movie 1 listed twice"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,7.5,20\n", "rating 7.5"),
        ("ratings.csv", "userId,movieId,rating,timestamp\n1,1,4.0,nan\n", "timestamp nan"),
    ],
)
def test_movielens_bad_rows_are_refused(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    root = make_movielens(tmp_path / "ml")
    write(root / name, text)
    with pytest.raises(DatasetError, match=message):
        read_movielens(root)


def test_amazon_unknown_items_and_unreadable_splits_are_refused(tmp_path: Path) -> None:
    root = make_amazon(tmp_path / "amz")
    valid = (root / "valid_F2.txt").read_text()
    write(root / "valid_F2.txt", valid.replace("3|2|2", "1705|2|2", 1))
    with pytest.raises(DatasetError, match=r"valid_F2\.txt:1: item 1705 is in neither"):
        read_amazon(root)
    (root / "valid_F2.txt").write_bytes(valid.encode() + b"\xe9\n")
    with pytest.raises(DatasetError, match=r"cannot read .*valid_F2\.txt"):
        read_amazon(root)
    write(root / "valid_F2.txt", valid + valid.splitlines()[0] + "\n")
    with pytest.raises(DatasetError, match=r"valid_F2\.txt:3: user 9 listed a third time"):
        read_amazon(root)


def test_amazon_split_given_as_a_relative_path_is_taken_from_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = make_amazon(tmp_path / "amz")
    (tmp_path / "elsewhere").mkdir()
    (root / "valid_F2.txt").rename(tmp_path / "elsewhere" / "mine_F2.txt")
    monkeypatch.chdir(tmp_path)
    ds = read_amazon(root, split="elsewhere/mine_F2.txt")
    assert sorted(e.user for e in ds.heldout) == ["u9", "u9"]
