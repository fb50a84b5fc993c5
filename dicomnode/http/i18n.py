"""Message catalogs for the worklist page (English, Ukrainian) and the choice between them.

The language is, in order: `?lang=` (the switch on the page, remembered in a cookie), the
cookie, the browser's Accept-Language (highest q first), English.
"""

from __future__ import annotations

from collections.abc import Callable

LANG_COOKIE = "dicomnode_lang"
DEFAULT_LANGUAGE = "en"

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "language_name": "English",
        "title": "Fracture triage worklist",
        "notice": "AI triage aid, not a diagnosis. Every study must be read by a radiologist.",
        "untrained_banner": (
            "UNTRAINED DEMO model: its results carry no information. Install a trained model "
            "package before clinical use."
        ),
        "no_destination_banner": (
            "No destination configured: results stay on this node and are not sent to the "
            "PACS. Add the PACS as a [[destinations]] entry in the configuration."
        ),
        "model": "Model",
        "studies_total": "Studies",
        "filters": "Filters",
        "outcome": "Outcome",
        "state": "State",
        "modality": "Modality",
        "date_from": "Study date from",
        "date_to": "to",
        "any": "any",
        "apply": "Apply",
        "reset": "Reset",
        "study_date": "Date",
        "study_time": "Time",
        "description": "Description",
        "body_part": "Body part",
        "images": "Images",
        "probability": "Highest probability",
        "results": "Results",
        "thumbnails": "Secondary captures",
        "patient": "Patient",
        "patient_id": "Patient ID",
        "accession": "Accession",
        "open_viewer": "Open in viewer",
        "details": "Details (JSON)",
        "no_studies": "No studies match.",
        "previous": "Previous",
        "next": "Next",
        "page": "Page",
        "auto_refresh": "Refreshes automatically",
        "sign_out": "Sign out",
        "sign_in": "Sign in",
        "token": "API token",
        "login_help": "Enter the node's API token (api.token in its configuration).",
        "wrong_token": "Wrong token.",
        "too_many_sign_ins": "Too many failed sign-ins from this computer. Try again later.",
        "filter_error": "Filter not applied",
        "outcome.positive": "fracture suspected",
        "outcome.doubt": "doubtful",
        "outcome.negative": "no fracture detected",
        "outcome.none": "pending",
        "state.waiting": "waiting",
        "state.processing": "processing",
        "state.reported": "reported",
        "state.delivered": "delivered",
        "state.failed": "failed",
        # The dense worklist (issue 19)
        "study_date_time": "Study date",
        "probability_short": "Prob.",
        "probability_short.title": "Highest fracture probability of the study's images",
        "accession_short": "Accession",
        "accession_short.title": "Accession number",
        "images_short": "Img.",
        "images_short.title": "Images received",
        "waiting": "Waiting",
        "waiting.title": "Time waiting since the node received the study; ✓ time to the result",
        "waiting_title": "Waiting since the node received the study",
        "to_result_title": "Time from receiving the study to its result",
        "open": "Open",
        "served_only": "Only results of the model served now",
        "keyboard_help": "Keys: j/k or ↓/↑ select a study, Enter opens it",
        "badge.demo": "DEMO",
        "badge.demo_title": "Result of an UNTRAINED DEMO model: it carries no information.",
        "badge.unknown": "model unknown",
        "badge.several": "several models",
        "badge.old": "no longer served",
        "unit.min": "min",
        "unit.h": "h",
        "unit.d": "d",
        # About the model (http/about.py): evidence, operating points, plots.
        "about.evidence_warning_title": "Weak validation evidence",
        "about.evidence_warning_help": (
            "The figures below may not hold on your patients. Validate the model on local data "
            "before relying on it (bounds: at least 50 fractures per data set, a 95 % CI of the "
            "AUC at most 0.20 wide)."
        ),
        "about.operating_points": "Operating points",
        "about.body_parts": "Body parts trained on",
        "about.point": "Operating point",
        "about.threshold": "Threshold",
        "about.data_set": "Data set",
        "about.sensitivity": "Sensitivity (95 % CI)",
        "about.specificity": "Specificity (95 % CI)",
        "about.images": "Images",
        "about.fractures": "Fractures",
        "about.auc": "ROC AUC (95 % CI)",
        "about.average_precision": "Average precision",
        "about.ece": "Calibration error (ECE)",
        "about.brier": "Brier score",
        "about.ci_help": (
            "In brackets: the 95 % bootstrap confidence interval. Validation figures come from "
            "the split the thresholds were fitted on and are optimistic; test figures from a "
            "held-out split."
        ),
        "about.plots": "Validation plots",
        "about.plot.roc": "ROC curve",
        "about.plot.pr": "Precision–recall curve",
        "about.plot.reliability": "Reliability (calibration)",
        "about.other_records": "Other records of the model card",
        "about.split.validation": "Validation",
        "about.split.val": "Validation (re-evaluated)",
        "about.split.test": "Test",
        "about.split.train": "Training set",
        "about.split.all": "All images",
        "about.split.training": "Training",
        "about.split.onnx_check": "ONNX check",
        # The same texts as dicomnode.model.evidence.ENGLISH (a test keeps them equal).
        "evidence.untrained": "untrained demo model: no validation evidence at all",
        "evidence.no_evidence": "the model card records no validation or test metrics",
        "evidence.set": "{split}: {images} images ({positives} fractures)",
        "evidence.set_positives_unknown": (
            "{split}: {images} images (number of fractures not recorded)"
        ),
        "evidence.set_size_unknown": "{split}: number of images and fractures not recorded",
        "evidence.few_positives": "fewer than {min_positives} fractures",
        "evidence.wide_ci": "AUC {auc}, 95 % CI {low}–{high} is wider than {max_width}",
        "evidence.ci_unknown": "no confidence interval of the AUC recorded",
    },
    "uk": {
        "language_name": "Українська",
        "title": "Робочий список сортування переломів",
        "notice": (
            "Допоміжний засіб ШІ для сортування, не діагноз. Кожне дослідження має "
            "прочитати радіолог."
        ),
        "untrained_banner": (
            "НЕНАВЧЕНА ДЕМО-модель: її результати не несуть інформації. Встановіть навчений "
            "пакет моделі перед клінічним використанням."
        ),
        "no_destination_banner": (
            "Не налаштовано жодного призначення: результати залишаються на цьому вузлі й не "
            "надсилаються до PACS. Додайте PACS як запис [[destinations]] у конфігурації."
        ),
        "model": "Модель",
        "studies_total": "Досліджень",
        "filters": "Фільтри",
        "outcome": "Результат",
        "state": "Стан",
        "modality": "Модальність",
        "date_from": "Дата дослідження від",
        "date_to": "до",
        "any": "будь-який",
        "apply": "Застосувати",
        "reset": "Скинути",
        "study_date": "Дата",
        "study_time": "Час",
        "description": "Опис",
        "body_part": "Частина тіла",
        "images": "Зображення",
        "probability": "Найвища ймовірність",
        "results": "Результати",
        "thumbnails": "Вторинні знімки",
        "patient": "Пацієнт",
        "patient_id": "ID пацієнта",
        "accession": "Номер замовлення",
        "open_viewer": "Відкрити у переглядачі",
        "details": "Деталі (JSON)",
        "no_studies": "Немає досліджень за цими умовами.",
        "previous": "Попередня",
        "next": "Наступна",
        "page": "Сторінка",
        "auto_refresh": "Оновлюється автоматично",
        "sign_out": "Вийти",
        "sign_in": "Увійти",
        "token": "Токен API",
        "login_help": "Введіть токен API вузла (api.token у його конфігурації).",
        "wrong_token": "Неправильний токен.",
        "too_many_sign_ins": "Забагато невдалих спроб входу з цього комп'ютера. Спробуйте пізніше.",
        "filter_error": "Фільтр не застосовано",
        "outcome.positive": "підозра на перелом",
        "outcome.doubt": "сумнівно",
        "outcome.negative": "перелом не виявлено",
        "outcome.none": "очікує",
        "state.waiting": "очікує",
        "state.processing": "обробляється",
        "state.reported": "звіт створено",
        "state.delivered": "доставлено",
        "state.failed": "помилка",
        # The dense worklist (issue 19)
        "study_date_time": "Дата дослідження",
        "probability_short": "Ймов.",
        "probability_short.title": "Найвища ймовірність перелому серед зображень дослідження",
        "accession_short": "№ замовл.",
        "accession_short.title": "Номер замовлення",
        "images_short": "Зобр.",
        "images_short.title": "Отримано зображень",
        "waiting": "Чекає",
        "waiting.title": "Час очікування від отримання дослідження вузлом; ✓ час до результату",
        "waiting_title": "Очікує від отримання дослідження вузлом",
        "to_result_title": "Час від отримання дослідження до результату",
        "open": "Відкрити",
        "served_only": "Лише результати поточної моделі",
        "keyboard_help": "Клавіші: j/k або ↓/↑ — вибрати дослідження, Enter — відкрити",
        "badge.demo": "ДЕМО",
        "badge.demo_title": "Результат НЕНАВЧЕНОЇ ДЕМО-моделі: він не несе інформації.",
        "badge.unknown": "модель невідома",
        "badge.several": "кілька моделей",
        "badge.old": "більше не використовується",
        "unit.min": "хв",
        "unit.h": "год",
        "unit.d": "д",
        # Про модель (http/about.py): докази, робочі точки, графіки.
        "about.evidence_warning_title": "Слабкі докази валідації",
        "about.evidence_warning_help": (
            "Наведені нижче показники можуть не справдитися на ваших пацієнтах. Перевірте "
            "модель на місцевих даних, перш ніж на неї покладатися (межі: щонайменше 50 "
            "переломів у кожному наборі даних, 95 % ДІ AUC не ширший за 0,20)."
        ),
        "about.operating_points": "Робочі точки",
        "about.body_parts": "Частини тіла в навчальних даних",
        "about.point": "Робоча точка",
        "about.threshold": "Поріг",
        "about.data_set": "Набір даних",
        "about.sensitivity": "Чутливість (95 % ДІ)",
        "about.specificity": "Специфічність (95 % ДІ)",
        "about.images": "Зображень",
        "about.fractures": "Переломів",
        "about.auc": "ROC AUC (95 % ДІ)",
        "about.average_precision": "Середня точність",
        "about.ece": "Похибка калібрування (ECE)",
        "about.brier": "Оцінка Брієра",
        "about.ci_help": (
            "У дужках: 95 % бутстреп-довірчий інтервал. Показники валідації отримано на "
            "частині даних, на якій підібрано пороги, тож вони оптимістичні; показники тесту — "
            "на відкладеній частині."
        ),
        "about.plots": "Графіки валідації",
        "about.plot.roc": "ROC-крива",
        "about.plot.pr": "Крива точності й повноти",
        "about.plot.reliability": "Надійність (калібрування)",
        "about.other_records": "Інші записи картки моделі",
        "about.split.validation": "Валідація",
        "about.split.val": "Валідація (повторна оцінка)",
        "about.split.test": "Тест",
        "about.split.train": "Навчальний набір",
        "about.split.all": "Усі зображення",
        "about.split.training": "Навчання",
        "about.split.onnx_check": "Перевірка ONNX",
        "evidence.untrained": "ненавчена демо-модель: жодних доказів валідації",
        "evidence.no_evidence": "картка моделі не містить метрик валідації чи тестування",
        "evidence.set": "{split}: {images} зображень ({positives} переломів)",
        "evidence.set_positives_unknown": (
            "{split}: {images} зображень (кількість переломів не записана)"
        ),
        "evidence.set_size_unknown": "{split}: кількість зображень і переломів не записана",
        "evidence.few_positives": "менше ніж {min_positives} переломів",
        "evidence.wide_ci": "AUC {auc}, 95 % ДІ {low}–{high} ширший за {max_width}",
        "evidence.ci_unknown": "довірчий інтервал AUC не записаний",
    },
}

LANGUAGES = tuple(MESSAGES)


def _accept_language(header: str) -> list[str]:
    """Language codes of an Accept-Language header, best first (q=0 left out)."""
    ranked: list[tuple[float, int, str]] = []
    for i, part in enumerate(header.split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if tag and q > 0:
            ranked.append((-q, i, tag.split("-")[0].lower()))
    return [tag for _, _, tag in sorted(ranked)]


def choose_language(*, query: str | None, cookie: str | None, accept_language: str) -> str:
    for candidate in (query, cookie):
        if candidate in MESSAGES:
            return candidate
    for tag in _accept_language(accept_language):
        if tag in MESSAGES:
            return tag
    return DEFAULT_LANGUAGE


def translator(language: str) -> Callable[[str], str]:
    """`t(key)`: the message in `language`, falling back to English, then to the key."""
    catalog = MESSAGES.get(language, MESSAGES[DEFAULT_LANGUAGE])
    fallback = MESSAGES[DEFAULT_LANGUAGE]

    def t(key: str) -> str:
        return catalog.get(key) or fallback.get(key) or key

    return t


def _merge_analysis_messages() -> None:
    """The analysis pages' catalog (issue 10) lives in its own module; one catalog here."""
    from dicomnode.http.i18n_analyze import ANALYZE_MESSAGES

    for code, extra in ANALYZE_MESSAGES.items():
        MESSAGES[code].update(extra)


_merge_analysis_messages()
