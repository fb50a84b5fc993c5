"""Messages of the analysis API and pages (English, Ukrainian), merged into `i18n.MESSAGES`.

Error messages are keyed `error.<code>` (the codes of `analysis.AnalysisError` and
`studyzip.ArchiveRejected`) and formatted with their parameters. A `{reason}` comes from
`preprocess` and stays in English (it names DICOM things).
"""

from __future__ import annotations

ANALYZE_MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "nav.worklist": "Worklist",
        "nav.analyze": "Analyze",
        "nav.about": "About the model",
        "analyze.title": "Analyze a radiograph",
        "analyze.intro": (
            "Upload one radiograph (DICOM, PNG, JPEG, BMP or TIFF), or a ZIP of DICOM studies "
            "(each study gets its own result). It is classified by the same pipeline and model "
            "as images sent to the node."
        ),
        "analyze.drop": "Drop a DICOM file, an image or a ZIP here, or",
        "analyze.choose": "choose a file",
        "analyze.limit": "At most {limit_mb} MB. Files are deleted after {hours} hours.",
        "analyze.preview": "Preview",
        "analyze.no_preview": "No preview for this file type; it is checked on the server.",
        "analyze.submit": "Analyze",
        "analyze.uploading": "Uploading…",
        "analyze.processing": "Analyzing…",
        "analyze.result": "Result",
        "analyze.fracture_probability": "Fracture",
        "analyze.normal_probability": "No fracture",
        "analyze.confidence": "Confidence",
        "analyze.confidence_help": "probability of the more likely class, max(P, 1 − P)",
        "analyze.thresholds": "Thresholds",
        "analyze.thresholds_help": "negative below {low}, positive from {high}, doubt between",
        "analyze.model": "Model",
        "analyze.time": "Processing time",
        "analyze.heatmap": "Heatmap overlay",
        "analyze.downloads": "Downloads",
        "analyze.download_sc": "Secondary Capture (DICOM)",
        "analyze.download_sr": "Structured Report (DICOM)",
        "analyze.download_overlay": "Overlay (PNG)",
        "analyze.download_report": "Report (XLSX)",
        "analyze.new": "New analysis",
        "analyze.studies": "Studies",
        "analyze.images": "Images",
        "analyze.entry": "File in archive",
        "analyze.state": "State",
        "analyze.reason": "Reason",
        "analyze.metadata": "DICOM metadata",
        "analyze.failed": "Analysis failed",
        "analyze.expires": "Kept until",
        "disclaimer": (
            "AI triage aid, not a diagnosis. Every image must be read by a radiologist; do "
            "not use this result to rule a fracture in or out."
        ),
        "label.fracture": "fracture suspected",
        "label.uncertain": "doubtful: needs review",
        "label.no_fracture": "no fracture detected",
        "state.classified": "classified",
        "state.skipped": "skipped",
        "about.title": "About the model",
        "about.name": "Name",
        "about.version": "Version",
        "about.architecture": "Architecture",
        "about.input": "Input",
        "about.classes": "Classes",
        "about.training_data": "Training data",
        "about.metrics": "Metrics",
        "about.no_metrics": "No metrics recorded.",
        "about.thresholds": "Operating thresholds",
        "about.threshold_low": "High-sensitivity threshold (below: negative)",
        "about.threshold_high": "High-specificity threshold (at or above: positive)",
        "about.temperature": "Calibration temperature",
        "about.min_image_size": "Smallest image classified (rows and columns; smaller: skipped)",
        "about.intended_use": "Intended use",
        "about.limitations": "Limitations",
        "about.created": "Created",
        "about.weights": "Weights SHA-256",
        "about.untrained": (
            "UNTRAINED DEMO: this model has random weights. Its probabilities, heatmaps and "
            "outcomes carry no information about fractures."
        ),
        "error.no_file": 'No file in the request: send one file in the form field "file".',
        "error.too_many_files": "Send one file per request.",
        "error.bad_request": "The request could not be read as a multipart form.",
        "error.empty_file": "The file is empty.",
        "error.too_large": "The file is larger than the limit of {limit_mb} MB.",
        "error.unsupported_format": (
            "Not a supported file: upload a DICOM, PNG, JPEG, BMP or TIFF image."
        ),
        "error.zip_for_single": (
            "This is a ZIP archive: send it to /api/analyze-study (a zipped DICOM study)."
        ),
        "error.not_zip": "Not a ZIP archive: /api/analyze-study takes a ZIP of a DICOM study.",
        "error.image_unreadable": "The image cannot be read: {reason}.",
        "error.dicom_unreadable": "The DICOM file cannot be classified: {reason}.",
        "error.not_radiograph": "This DICOM file is not classified: {reason}.",
        "error.image_too_small": "This image is not classified: {reason}.",
        "error.zip_corrupt": "The ZIP archive is damaged or cannot be read.",
        "error.zip_too_many_entries": (
            "The archive has {count} entries; at most {limit} are accepted."
        ),
        "error.zip_too_large": "The archive expands to more than {limit_mb} MB; refused.",
        "error.zip_entry_too_large": (
            "A file in the archive expands to more than {limit_mb} MB; refused."
        ),
        "error.zip_ratio": (
            "A file in the archive is compressed more than {limit:g}:1 (a ZIP bomb?); refused."
        ),
        "error.zip_unsafe_path": (
            "The archive has entries with unsafe names (absolute, or containing ..); refused."
        ),
        "error.zip_no_dicom": "No DICOM file was found in the archive.",
        "error.send_needs_dicom": (
            "Only DICOM results can be sent: upload a DICOM file to use send=true."
        ),
        "error.send_no_destinations": "No destinations are configured: nothing can be sent.",
        "error.send_needs_token": (
            "Sending to destinations needs the bearer token (Authorization header)."
        ),
        "error.send_unavailable": "Sending is not available on this node.",
        "error.model_not_loaded": "The model is not loaded yet; try again shortly.",
        "error.internal_error": (
            "The node could not analyse this file because of an internal error; "
            "it is logged for the administrator."
        ),
        "error.not_found": "No such analysis (it may have been deleted after its retention).",
        "analyze.refused": "Not analysed",
        "analyze.preview_loading": "Preparing the preview…",
        "analyze.zip_chosen": "A ZIP archive: no preview; each study in it gets its own result.",
        "analyze.study": "Study {n} of {count}",
        "analyze.studies_found": "{count} studies in the archive: each has its own result.",
        "analyze.not_classified": "not classified",
        "analyze.study_images": "{classified} of {images} images classified",
        "date.long": "{month} {day}, {year}",
        "error.preview_unsupported": "No preview: not an image (a ZIP is not previewed).",
        "error.preview_unavailable": "No preview of this file: {reason}.",
        "month.1": "January",
        "month.2": "February",
        "month.3": "March",
        "month.4": "April",
        "month.5": "May",
        "month.6": "June",
        "month.7": "July",
        "month.8": "August",
        "month.9": "September",
        "month.10": "October",
        "month.11": "November",
        "month.12": "December",
    },
    "uk": {
        "nav.worklist": "Робочий список",
        "nav.analyze": "Аналіз",
        "nav.about": "Про модель",
        "analyze.title": "Аналіз рентгенограми",
        "analyze.intro": (
            "Завантажте одну рентгенограму (DICOM, PNG, JPEG, BMP або TIFF) або ZIP-архів "
            "досліджень DICOM (кожне дослідження отримує власний результат). Її класифікують "
            "той самий конвеєр і модель, що й зображення, надіслані на вузол."
        ),
        "analyze.drop": "Перетягніть сюди файл DICOM, зображення або ZIP, або",
        "analyze.choose": "виберіть файл",
        "analyze.limit": "Не більше {limit_mb} МБ. Файли видаляються через {hours} год.",
        "analyze.preview": "Попередній перегляд",
        "analyze.no_preview": (
            "Для цього типу файлу попереднього перегляду немає; його перевірить сервер."
        ),
        "analyze.submit": "Аналізувати",
        "analyze.uploading": "Завантаження…",
        "analyze.processing": "Аналіз…",
        "analyze.result": "Результат",
        "analyze.fracture_probability": "Перелом",
        "analyze.normal_probability": "Без перелому",
        "analyze.confidence": "Впевненість",
        "analyze.confidence_help": "ймовірність більш імовірного класу, max(P, 1 − P)",
        "analyze.thresholds": "Пороги",
        "analyze.thresholds_help": (
            "негативний нижче {low}, позитивний від {high}, сумнівний між ними"
        ),
        "analyze.model": "Модель",
        "analyze.time": "Час обробки",
        "analyze.heatmap": "Теплова карта",
        "analyze.downloads": "Завантаження",
        "analyze.download_sc": "Вторинний знімок (DICOM)",
        "analyze.download_sr": "Структурований звіт (DICOM)",
        "analyze.download_overlay": "Накладання (PNG)",
        "analyze.download_report": "Звіт (XLSX)",
        "analyze.new": "Новий аналіз",
        "analyze.studies": "Дослідження",
        "analyze.images": "Зображення",
        "analyze.entry": "Файл в архіві",
        "analyze.state": "Стан",
        "analyze.reason": "Причина",
        "analyze.metadata": "Метадані DICOM",
        "analyze.failed": "Аналіз не вдався",
        "analyze.expires": "Зберігається до",
        "disclaimer": (
            "Допоміжний засіб ШІ для сортування, не діагноз. Кожне зображення має прочитати "
            "радіолог; не використовуйте цей результат, щоб підтвердити чи виключити перелом."
        ),
        "label.fracture": "підозра на перелом",
        "label.uncertain": "сумнівно: потрібен перегляд",
        "label.no_fracture": "перелом не виявлено",
        "state.classified": "класифіковано",
        "state.skipped": "пропущено",
        "about.title": "Про модель",
        "about.name": "Назва",
        "about.version": "Версія",
        "about.architecture": "Архітектура",
        "about.input": "Вхід",
        "about.classes": "Класи",
        "about.training_data": "Дані для навчання",
        "about.metrics": "Метрики",
        "about.no_metrics": "Метрики не записані.",
        "about.thresholds": "Робочі пороги",
        "about.threshold_low": "Поріг високої чутливості (нижче: негативний)",
        "about.threshold_high": "Поріг високої специфічності (від нього: позитивний)",
        "about.temperature": "Температура калібрування",
        "about.min_image_size": (
            "Найменше зображення, що класифікується (рядки й стовпці; менше: пропущено)"
        ),
        "about.intended_use": "Призначення",
        "about.limitations": "Обмеження",
        "about.created": "Створено",
        "about.weights": "SHA-256 ваг",
        "about.untrained": (
            "НЕНАВЧЕНА ДЕМО-модель: її ваги випадкові. Її ймовірності, теплові карти та "
            "результати не несуть жодної інформації про переломи."
        ),
        "error.no_file": 'У запиті немає файлу: надішліть один файл у полі форми "file".',
        "error.too_many_files": "Надсилайте один файл на запит.",
        "error.bad_request": "Запит не вдалося прочитати як multipart-форму.",
        "error.empty_file": "Файл порожній.",
        "error.too_large": "Файл більший за обмеження {limit_mb} МБ.",
        "error.unsupported_format": (
            "Непідтримуваний файл: завантажте зображення DICOM, PNG, JPEG, BMP або TIFF."
        ),
        "error.zip_for_single": (
            "Це ZIP-архів: надішліть його на /api/analyze-study (архів дослідження DICOM)."
        ),
        "error.not_zip": "Це не ZIP-архів: /api/analyze-study приймає ZIP дослідження DICOM.",
        "error.image_unreadable": "Зображення не вдається прочитати: {reason}.",
        "error.dicom_unreadable": "Файл DICOM не вдається класифікувати: {reason}.",
        "error.not_radiograph": "Цей файл DICOM не класифікується: {reason}.",
        "error.image_too_small": "Це зображення не класифікується: {reason}.",
        "error.zip_corrupt": "ZIP-архів пошкоджений або не читається.",
        "error.zip_too_many_entries": "В архіві {count} записів; приймається не більше {limit}.",
        "error.zip_too_large": "Архів розпаковується у понад {limit_mb} МБ; відхилено.",
        "error.zip_entry_too_large": (
            "Файл в архіві розпаковується у понад {limit_mb} МБ; відхилено."
        ),
        "error.zip_ratio": (
            "Файл в архіві стиснутий більш ніж {limit:g}:1 (ZIP-бомба?); відхилено."
        ),
        "error.zip_unsafe_path": (
            "В архіві є записи з небезпечними іменами (абсолютні або з ..); відхилено."
        ),
        "error.zip_no_dicom": "В архіві не знайдено жодного файлу DICOM.",
        "error.send_needs_dicom": (
            "Надсилати можна лише результати DICOM: завантажте файл DICOM, щоб використати "
            "send=true."
        ),
        "error.send_no_destinations": "Адресатів не налаштовано: нічого не можна надіслати.",
        "error.send_needs_token": (
            "Для надсилання адресатам потрібен токен (заголовок Authorization)."
        ),
        "error.send_unavailable": "Надсилання на цьому вузлі недоступне.",
        "error.model_not_loaded": "Модель ще не завантажена; спробуйте трохи пізніше.",
        "error.internal_error": (
            "Вузол не зміг проаналізувати цей файл через внутрішню помилку; "
            "її записано в журнал для адміністратора."
        ),
        "error.not_found": (
            "Такого аналізу немає (можливо, його видалено після терміну зберігання)."
        ),
        "analyze.refused": "Не проаналізовано",
        "analyze.preview_loading": "Готуємо попередній перегляд…",
        "analyze.zip_chosen": (
            "ZIP-архів: без попереднього перегляду; кожне дослідження в ньому отримає власний "
            "результат."
        ),
        "analyze.study": "Дослідження {n} з {count}",
        "analyze.studies_found": "В архіві досліджень: {count}; кожне має власний результат.",
        "analyze.not_classified": "не класифіковано",
        "analyze.study_images": "класифіковано {classified} з {images} зображень",
        "date.long": "{day} {month} {year} р.",
        "error.preview_unsupported": (
            "Попереднього перегляду немає: це не зображення (ZIP не переглядається)."
        ),
        "error.preview_unavailable": "Попереднього перегляду цього файлу немає: {reason}.",
        "month.1": "січня",
        "month.2": "лютого",
        "month.3": "березня",
        "month.4": "квітня",
        "month.5": "травня",
        "month.6": "червня",
        "month.7": "липня",
        "month.8": "серпня",
        "month.9": "вересня",
        "month.10": "жовтня",
        "month.11": "листопада",
        "month.12": "грудня",
    },
}
