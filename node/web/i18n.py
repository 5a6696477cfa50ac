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
    "Scanned CCRNs": "已掃描的海關貨物編號",
    "Scan another QR code to add its CCRN to this list.": (
        "掃描另一個二維碼，即可把其海關貨物編號加入此清單。"
    ),
    "Remove": "移除",
    "More CCRNs, one per line": "其他海關貨物編號，每行一個",
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
    # sre
    "Cluster": "叢集",
    "Drill reports": "演練報告",
    "Sites": "站點",
    "Site": "站點",
    "Leader": "領導節點",
    "nobody": "無",
    "Patroni is paused (maintenance mode).": "Patroni 已暫停（維護模式）。",
    "Leader unknown: etcd gave no quorum answer.": "領導節點不明：etcd 未能給出法定多數的回應。",
    "API node": "API 節點",
    "PostgreSQL member": "PostgreSQL 成員",
    "Replication lag": "複製延遲",
    "Failover controller": "故障切換控制器",
    "this node": "本節點",
    "Not answering": "沒有回應",
    "Active": "主用",
    "Standby": "備用",
    "ready": "就緒",
    "not ready": "未就緒",
    "unknown": "不明",
    "Patroni did not answer": "Patroni 沒有回應",
    "Member": "成員",
    "Health": "健康狀況",
    "raft leader": "raft 領導者",
    "healthy": "正常",
    "unhealthy": "異常",
    "etcd did not answer": "etcd 沒有回應",
    "Primary": "主伺服器",
    "Errors": "錯誤次數",
    "Writes over the last hour": "過去一小時的寫入",
    "Writes answered by this node over the last hour": "此節點過去一小時回應的寫入",
    "Writes answered by node": "回應寫入的節點",
    "10-second buckets, Hong Kong time. Availability counts only writes the system failed, not refused ones.": "每格 10 秒，香港時間。可用率只計算系統未能完成的寫入，不計算被拒絕的請求。",  # noqa: E501 (one text and its translation per line)
    "Write availability (%)": "寫入可用率（%）",
    "Latency of successful writes": "成功寫入的延遲",
    "No writes in the last hour.": "過去一小時沒有寫入。",
    "failed": "失敗",
    "lowest": "最低",
    "at most": "最多",
    "mean": "平均",
    "Last drills": "最近演練",
    "Scenario": "情境",
    "Passed": "通過",
    "Failed": "未通過",
    "No drill has been published yet.": "尚未發佈任何演練結果。",
    "This page refreshes itself every 10 seconds.": "此頁每 10 秒自動更新。",
    "Drill": "演練",
    "Writes never came back.": "寫入一直未能恢復。",
    "acknowledged writes lost": "項已確認的寫入遺失",
    "Finished": "完成時間",
    "Bars up: writes acknowledged per interval; bars down: writes retried after an error; shaded: the longest write gap (the RTO); dashed: the fault; dots: the drill's events.": "向上的柱：每段時間內已確認的寫入；向下的柱：出錯後重試的寫入；陰影：最長的寫入中斷（RTO）；虛線：故障；圓點：演練事件。",  # noqa: E501 (one text and its translation per line)
    "Events": "事件列表",
    "Seconds": "秒",
    "Event": "事件",
    "No timeline was published with this drill.": "此演練沒有發佈時間線。",
    "Writes acknowledged": "已確認的寫入",
    "Writes retried": "重試的寫入",
    "Fault": "故障",
    "Write gap (RTO)": "寫入中斷（RTO）",
    "Most writes retried at once": "同時重試的寫入最多",
    "Seconds since the drill started": "演練開始後的秒數",
    # officer
    "Selections": "查驗選取",
    "Arrivals": "車輛抵達",
    "Risk rules": "風險規則",
    "Registrations": "登記申請",
    "Selections for inspection": "選取查驗",
    "Show": "顯示",
    "Trucks selected": "被選取查驗的貨車",
    "Consignments selected": "被選取查驗的貨物",
    "Not before": "最早過境時間",
    "Reasons": "原因",
    "No trucks are selected.": "沒有貨車被選取。",
    "No consignments are selected.": "沒有貨物被選取。",
    "Refresh": "重新整理",
    "Kind": "類別",
    "Value": "值",
    "State": "狀態",
    "Action": "操作",
    "All": "全部",
    "In use": "使用中",
    "Not in use": "已停用",
    "Activate": "啟用",
    "Deactivate": "停用",
    "No risk rules yet.": "尚未有風險規則。",
    "New risk rule": "新增風險規則",
    "A keyword, a pattern, a name, a vehicle number, or a percentage for random checks.": "關鍵字、模式、名稱、車輛號碼，或隨機抽查的百分比。",  # noqa: E501 (one text and its translation per line)
    "Active at once": "立即生效",
    "Create rule": "建立規則",
    "Risk rule created.": "風險規則已建立。",
    "Risk rule activated.": "風險規則已啟用。",
    "Risk rule deactivated.": "風險規則已停用。",
    "keyword": "關鍵字",
    "pattern": "模式",
    "consignor": "付貨人",
    "consignee": "收貨人",
    "vrn": "車輛登記號碼",
    "random": "隨機抽查",
    "Registration approved": "登記已批准",
    "The new account's API key, shown only this once. Give it to the applicant by a safe channel.": "新帳戶的 API 密鑰只會顯示這一次，請以安全途徑交予申請人。",  # noqa: E501 (one text and its translation per line)
    "The API key was shown when this registration was first approved and cannot be shown again.": "API 密鑰已於首次批准時顯示，無法再次顯示。",  # noqa: E501 (one text and its translation per line)
    "Registration rejected.": "登記已拒絕。",
    "pending": "待處理",
    "approved": "已批准",
    "rejected": "已拒絕",
    "trader": "貿易商",
    "trucker": "貨車司機",
    "shipper": "付貨人",
    "forwarder": "貨運代理",
    "agent": "代理人",
    "Business registration number": "商業登記號碼",
    "Contact": "聯絡資料",
    "Applied": "申請時間",
    "Decided": "決定時間",
    "Approve": "批准",
    "Reject": "拒絕",
    "Reason for rejection": "拒絕原因",
    "No registrations here.": "沒有登記申請。",
    "Land-to-air transshipment (ITFS)": "陸空轉運（ITFS）",
    "The airport may inspect this cargo.": "機場可查驗此貨物。",
    "The airport must not inspect this cargo again.": "機場不得再次查驗此貨物。",
    "Outcome at the control point": "管制站處理結果",
    "Inspected at the control point": "已於管制站查驗",
    "Inspected at the airport": "已於機場查驗",
    "Yes": "是",
    "No": "否",
    "Time": "時間",
    "Decision": "決定",
    "Release": "放行",
    "Inspect": "查驗",
    "Hold": "稍候",
    "Refuse entry": "拒絕入境",
    "No arrivals yet.": "暫無車輛抵達。",
    "Refresh the page to see new arrivals.": "請重新整理此頁以查看新抵達的車輛。",
    "Live: new arrivals appear at the top.": "即時更新：新抵達的車輛會顯示在最上方。",
    "The database cannot be read now; new arrivals appear when it is back.": "現時無法讀取資料庫；資料庫恢復後會顯示新抵達的車輛。",  # noqa: E501 (one text and its translation per line)
    "Live updates are off; refresh the page to see new arrivals.": "即時更新已停止；請重新整理此頁以查看新抵達的車輛。",  # noqa: E501 (one text and its translation per line)
    "Manual clearance is switched on.": "已啟動人手清關。",
    "Clearance recorded in this node's journal; it is stored when the database is back.": "清關紀錄已寫入本節點日誌；資料庫恢復後會存入資料庫。",  # noqa: E501 (one text and its translation per line)
    "Clearance stored in the database.": "清關紀錄已存入資料庫。",
    "journalled": "已記錄於節點日誌",
    "stored": "已存入資料庫",
    "This node's local override is set": "本節點已設定本地模式",
    "The cluster's configuration store cannot be reached from this node.": "本節點無法連接叢集的設定儲存。",  # noqa: E501 (one text and its translation per line)
    "Manual clearance is recommended": "建議啟動人手清關",
    "Reconciliation report": "對賬報告",
    "Imported into the database": "已匯入資料庫",
    "Already imported before": "早前已匯入",
    "Matched to a bundle": "已配對組合",
    "Audit events imported": "已匯入的審計紀錄",
    "Journals read": "已讀取的日誌",
    "Not matched to a bundle": "未能配對組合",
    "Set aside for an officer (refused by the database)": "留待人員處理（資料庫拒絕）",
    "Record a manual clearance": "記錄人手清關",
    "Documents seen, one per line": "已查閱的文件，每行一項",
    "CCRNs, one per line (if any)": "海關貨物編號，每行一個（如有）",
    "Cleared at (Hong Kong time; blank: now)": "清關時間（香港時間；留空即現在）",
    "Record clearance": "記錄清關",
    "Manual clearances": "人手清關紀錄",
    "The database cannot be read from this node now: only this node's journal is listed.": "現時無法從本節點讀取資料庫：只列出本節點日誌的紀錄。",  # noqa: E501 (one text and its translation per line)
    "Cleared at": "清關時間",
    "Where it is": "紀錄位置",
    "No manual clearances to show.": "沒有人手清關紀錄。",
    "Switch manual clearance off": "解除人手清關",
    "The records kept on the nodes while the database was down are imported first; manual clearance stays on if they cannot be.": "資料庫停頓期間節點保存的紀錄會先匯入；如未能匯入，人手清關會維持生效。",  # noqa: E501 (one text and its translation per line)
    "Control points to switch back": "恢復正常的管制站",
    "Reconcile and switch off": "對賬並解除",
    "Switch manual clearance on": "啟動人手清關",
    "Notice for the public (optional)": "公眾通告（選填）",
    "Shown on the public status page.": "會顯示於公眾系統狀況頁。",
    "Control points": "管制站",
    "Tick none for every control point.": "不選任何一項即適用於所有管制站。",
    "Continue": "繼續",
    "Confirm manual clearance": "確認人手清關",
    "Confirm: switch manual clearance on?": "確認：啟動人手清關？",
    "Every gate at these control points will answer “manual clearance” at once, and the public status page will say so.": "這些管制站的所有閘口會立即回應「人手清關」，公眾系統狀況頁亦會顯示。",  # noqa: E501 (one text and its translation per line)
    "Cancel": "取消",
    # errors
    "Error": "錯誤",
    "The service is busy or unavailable; please try again shortly.": "服務繁忙或暫時無法使用，請稍後再試。",  # noqa: E501 (one text and its translation per line)
    "Back": "返回",
}
