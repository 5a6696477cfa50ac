"""The pages' two languages: English and Traditional Chinese (zh-Hant, as used in Hong Kong).

Chosen by the visitor's switch (a cookie), else by Accept-Language, else English. Texts are
written in English in the templates and the page modules (`_("...")`); ZH_HANT holds their
translations, and a test checks that every text used has one. Messages that come from the
API's rules (a problem's field message) are shown as the API wrote them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, Literal

Lang = Literal["en", "zh-Hant"]
LANGS: Final[tuple[Lang, ...]] = ("en", "zh-Hant")
LANG_COOKIE = "rocars_lang"
# What each language is called in itself, for the switch.
NATIVE: Final[dict[Lang, str]] = {"en": "English", "zh-Hant": "繁體中文"}
# Chinese tags read as Traditional Chinese: the territory's written standard. Simplified ones
# (zh-Hans, zh-CN, zh-SG) get English, the other language of the service.
_TRADITIONAL = ("zh-hant", "zh-hk", "zh-tw", "zh-mo", "zh")
_SIMPLIFIED = ("zh-hans", "zh-cn", "zh-sg")


def parse_accept_language(header: str | None) -> Lang | None:
    """The best of LANGS for an Accept-Language header (q-values honoured), or None."""
    if not header:
        return None
    ranked: list[tuple[float, int, Lang]] = []
    for i, part in enumerate(header.split(",")[:32]):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        if q <= 0 or not tag:
            continue
        lang: Lang | None = None
        if tag == "en" or tag.startswith("en-"):
            lang = "en"
        elif any(tag == s or tag.startswith(s + "-") for s in _SIMPLIFIED):
            lang = None
        elif any(tag == t or tag.startswith(t + "-") for t in _TRADITIONAL):
            lang = "zh-Hant"
        if lang is not None:
            ranked.append((-q, i, lang))
    return min(ranked)[2] if ranked else None


def choose(cookie: str | None, accept_language: str | None) -> Lang:
    for lang in LANGS:
        if cookie == lang:
            return lang
    return parse_accept_language(accept_language) or "en"


def gettext(lang: Lang) -> Callable[[str], str]:
    if lang == "en":
        return lambda text: text
    return lambda text: ZH_HANT.get(text, text)


ZH_HANT: Final[dict[str, str]] = {
    # layout
    "Road Cargo System": "道路貨物資料系統",
    "Skip to content": "跳至內容",
    "Language": "語言",
    "Signed in as": "已登入：",
    "Sign out": "登出",
    "Sign in": "登入",
    "System status": "系統狀況",
    "Trader": "貿易商",
    "Trucker": "貨車司機",
    "Main": "主選單",
    # sign-in
    "Sign in with your API key": "以 API 密鑰登入",
    "API key": "API 密鑰",
    "The key you received when your registration was approved.": "登記獲批准時收到的密鑰。",
    "The API key is not valid.": "API 密鑰無效。",
    "This account is suspended.": "此帳戶已被暫停。",
    "Your session has ended. Please sign in again.": "工作階段已結束，請重新登入。",
    "You have signed out.": "您已登出。",
    "The form expired or was sent from another site. Please try again.": "表格已過期或來自其他網站，請重試。",  # noqa: E501 (one text and its translation per line)
    "These pages are for traders and truckers.": "此網頁供貿易商及貨車司機使用。",
    "Too many requests: please wait a moment and try again.": "請求過多，請稍候再試。",
    # status
    "Normal": "正常",
    "Manual clearance": "人手清關",
    "Electronic clearance is working normally.": "電子清關運作正常。",
    "Manual customs clearance is in force.": "現正實施人手清關。",
    "Boundary control point": "管制站",
    "Mode": "模式",
    "Since": "開始時間",
    "Notice": "通告",
    "Late submissions": "逾時提交",
    "Late submissions are accepted without penalty until": "以下時間前逾時提交不會被記錄為逾時：",
    "Late submissions are accepted without penalty during manual clearance and for 2 hours after it.": "人手清關期間及結束後 2 小時內，逾時提交不會被記錄為逾時。",  # noqa: E501 (one text and its translation per line)
    "Submissions must be made at least 30 minutes before the cargo crosses.": "必須於貨物過境前最少 30 分鐘提交資料。",  # noqa: E501 (one text and its translation per line)
    "Recent changes": "最近變更",
    "No changes recorded.": "沒有變更紀錄。",
    "When": "時間",
    "Change": "變更",
    "Reason": "原因",
    "All control points": "所有管制站",
    "Switched on": "啟動",
    "Switched off": "解除",
    "Updated": "更新時間",
    "This page refreshes itself every 15 seconds.": "此頁每 15 秒自動更新。",
    "Answered by node": "回應節點",
    # trader
    "Consignments": "貨物",
    "New consignment": "新增貨物資料",
    "Upload a batch": "上載批量檔案",
    "My consignments": "我的貨物",
    "Submit cargo information": "提交貨物資料",
    "Direction": "方向",
    "Import": "進口",
    "Export": "出口",
    "Number of packages": "包裝數量",
    "Description of packages": "包裝說明",
    "Description of articles in each package": "每件包裝內物品說明",
    "Consignor name": "付貨人名稱",
    "Consignor address": "付貨人地址",
    "Consignee name": "收貨人名稱",
    "Consignee address": "收貨人地址",
    "Expected arrival or departure (Hong Kong time)": "預計抵達或離開時間（香港時間）",
    "At least 30 minutes and at most 14 days ahead.": "須為 30 分鐘至 14 日後。",
    "Land-to-air transshipment (ITFS), optional": "陸空轉運（ITFS，選填）",
    "Airport code": "機場代號",
    "Flight number": "航班編號",
    "Submit": "提交",
    "Please correct the fields marked below.": "請更正以下標示的欄位。",
    "There is a problem": "出現問題",
    "Consignment submitted.": "貨物資料已提交。",
    "CCRN": "海關貨物編號",
    "Status": "狀態",
    "Version": "版本",
    "Expected at": "預計時間",
    "Last changed": "最後修改",
    "QR code of the CCRN for the trucker": "供貨車司機掃描的海關貨物編號二維碼",
    "Print": "列印",
    "Copy CCRN": "複製編號",
    "Copied": "已複製",
    "Amend": "修改",
    "Save changes": "儲存修改",
    "Consignment amended.": "貨物資料已修改。",
    "Cancel consignment": "取消貨物資料",
    "Consignment cancelled.": "貨物資料已取消。",
    "Cancel this consignment? This cannot be undone.": "確定取消此貨物資料？此操作無法復原。",
    "History": "修改紀錄",
    "Changed at": "修改時間",
    "Filter": "篩選",
    "Any status": "所有狀態",
    "Find a CCRN": "尋找海關貨物編號",
    "Find": "尋找",
    "Next page": "下一頁",
    "No consignments found.": "找不到貨物資料。",
    "submitted": "已提交",
    "bundled": "已組合",
    "cleared": "已清關",
    "detained": "已扣查",
    "cancelled": "已取消",
    "open": "待過境",
    "inspecting": "查驗中",
    "closed": "已完成",
    "import": "進口",
    "export": "出口",
    "Batch file (CSV or JSON, up to 10 MiB, 10,000 items)": "批量檔案（CSV 或 JSON，最大 10 MiB，10,000 項）",  # noqa: E501 (one text and its translation per line)
    "CSV columns: the 8 items as in the API (direction, lbcp, package_count, ...).": "CSV 欄位：與 API 相同的 8 項資料（direction、lbcp、package_count 等）。",  # noqa: E501 (one text and its translation per line)
    "Upload": "上載",
    "Uploading": "上載中",
    "Batch results": "批量結果",
    "Accepted": "已接納",
    "Rejected": "已拒絕",
    "Row": "行",
    "Result": "結果",
    "Download results as CSV": "下載結果（CSV）",
    "Choose a file to upload.": "請選擇要上載的檔案。",
    "The file is larger than 10 MiB.": "檔案大於 10 MiB。",
    # trucker
    "Bundle": "組合",
    "Bundle CCRNs with your vehicle": "將海關貨物編號與車輛組合",
    "Vehicle registration number": "車輛登記號碼",
    "CCRNs, one per line": "海關貨物編號，每行一個",
    "Empty truck (no cargo)": "空車（沒有貨物）",
    "Declare an empty truck": "申報空車",
    "Cross now": "現可過境",
    "Cross after": "請於以下時間後過境",
    "Time left": "剩餘時間",
    "Bundle number": "組合編號",
    "Cancel bundle": "取消組合",
    "Bundle cancelled.": "組合已取消。",
    "Cancel this bundle?": "確定取消此組合？",
    "My bundles this session": "本次登入的組合",
    "No bundles yet.": "暫無組合。",
    "Empty truck": "空車",
    "Vehicle": "車輛",
    # errors
    "Error": "錯誤",
    "The service is busy or unavailable; please try again shortly.": "服務繁忙或暫時無法使用，請稍後再試。",  # noqa: E501 (one text and its translation per line)
    "Back": "返回",
}
