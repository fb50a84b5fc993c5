// dicomnode Analyze page: pick or drop a file (one picker), preview it, upload it with progress,
// show the result. PNG, JPEG and BMP are previewed by the browser; anything else (DICOM, TIFF)
// by the node (/api/preview: its own decoders and display pipeline; browsers cannot show
// DICOM).
// A ZIP (recognised by its first bytes, as the server does) goes to /api/analyze-study and
// gives one result per study. A refusal (4xx: not a radiograph, too small, too large, …) is
// shown with its reason, apart from a failure (5xx, network). The result's id is put into the
// URL, so a reload or a language switch shows it again.
(function () {
  "use strict";
  var messages = JSON.parse(document.getElementById("messages").textContent);
  var lang = document.body.getAttribute("data-lang") || "en";
  var $ = function (id) { return document.getElementById(id); };
  var chosen = null;
  var maxUploadBytes = Number(document.body.getAttribute("data-max-upload-bytes")) || Infinity;

  function t(key) { return messages[key] || key; }
  // Numbers in the page's language (its decimal sign: "52,0 %" in Ukrainian), by the browser's Intl.
  function number(x, digits) {
    return Number(x).toLocaleString(document.documentElement.lang || "en",
      {minimumFractionDigits: digits, maximumFractionDigits: digits});
  }
  function percent(p) { return number(100 * p, 1) + " %"; }
  function show(el, visible) { el.hidden = !visible; }
  function clear(el) { while (el.firstChild) { el.removeChild(el.firstChild); } }
  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }

  function setIdInUrl(id) {
    var url = new URL(window.location.href);
    if (id) { url.searchParams.set("id", id); } else { url.searchParams.delete("id"); }
    url.searchParams.delete("lang");
    window.history.replaceState(null, "", url.pathname + url.search);
    Array.prototype.forEach.call(document.querySelectorAll("a.lang-link"), function (a) {
      var link = new URL(a.href);
      if (id) { link.searchParams.set("id", id); } else { link.searchParams.delete("id"); }
      a.href = link.pathname + link.search;
    });
  }

  function format(template, values) {
    return template.replace(/\{(\w+)\}/g, function (whole, name) {
      return values[name] === undefined ? whole : String(values[name]);
    });
  }

  function isZip(b) { return b.length >= 4 && b[0] === 0x50 && b[1] === 0x4b && (b[2] === 3 || b[2] === 5); }

  var previewRequest = 0;  // a newer choice makes older preview answers stale

  function previewStatus(text) {
    var status = $("preview-status");
    status.textContent = text || "";
    show(status, !!text);
  }

  var previewUrl = null;  // the object URL shown, released when another replaces it

  function previewShown(blob) {
    var img = $("preview-image");
    if (previewUrl) { URL.revokeObjectURL(previewUrl); previewUrl = null; }
    if (blob) { previewUrl = URL.createObjectURL(blob); img.src = previewUrl; } else { img.removeAttribute("src"); }
    show(img, !!blob);
  }

  function previewByNode(file, request) {
    previewStatus(t("analyze.preview_loading"));
    var form = new FormData();
    form.append("file", file);
    fetch("/api/preview?lang=" + encodeURIComponent(lang), { method: "POST", body: form, credentials: "same-origin" })
      .then(function (r) {
        if (request !== previewRequest) { return null; }
        if (r.ok) { return r.blob().then(function (blob) { return { blob: blob }; }); }
        return r.json().then(function (body) { return { detail: body.detail }; },
                             function () { return { detail: "HTTP " + r.status }; });
      })
      .then(function (answer) {
        if (!answer || request !== previewRequest) { return; }
        if (answer.blob) { previewStatus(null); previewShown(answer.blob); return; }
        previewShown(null);
        previewStatus(answer.detail);
      })
      .catch(function () { if (request === previewRequest) { previewShown(null); previewStatus(null); show($("preview-none"), true); } });
  }

  function choose(file) {
    chosen = file;
    var request = ++previewRequest;
    $("file-name").textContent = file ? file.name + " (" + Math.ceil(file.size / 1024) + " KiB)" : "";
    $("analyze-button").disabled = !file;
    show($("analyze-error"), false);
    previewShown(null); previewStatus(null); show($("preview-none"), false);
    var preview = $("preview");
    preview.removeAttribute("data-kind");
    if (!file) { show(preview, false); return; }
    show(preview, true);
    if (/^image\/(png|jpeg|bmp|gif|webp)$/.test(file.type)) {
      preview.setAttribute("data-kind", "picture");
      previewShown(file);
      return;
    }
    file.slice(0, 132).arrayBuffer().then(function (buffer) {
      if (request !== previewRequest) { return; }
      var b = new Uint8Array(buffer);
      if (isZip(b)) {
        preview.setAttribute("data-kind", "zip");
        previewStatus(t("analyze.zip_chosen"));
      } else {  // DICOM, or what the node will name (a TIFF, a DICOM without preamble, …)
        var dicm = b.length >= 132 && String.fromCharCode(b[128], b[129], b[130], b[131]) === "DICM";
        preview.setAttribute("data-kind", dicm ? "dicom" : "other");
        if (file.size > maxUploadBytes) { show($("preview-none"), true); return; }  // refused anyway: not sent twice
        previewByNode(file, request);
      }
    });
  }

  function progress(state, fraction) {
    show($("progress"), state !== null);
    var bar = $("progress-bar");
    if (state === "uploading") {
      bar.value = Math.round(100 * (fraction || 0));
      $("progress-text").textContent = t("analyze.uploading");
    } else if (state === "processing") {
      bar.removeAttribute("value");  // indeterminate
      $("progress-text").textContent = t("analyze.processing");
    }
  }

  // `refused`: the node would not analyse this file (4xx, with the reason); else it failed.
  function fail(message, refused) {
    progress(null);
    var box = $("analyze-error");
    box.setAttribute("data-kind", refused ? "refused" : "failed");
    $("analyze-error-title").textContent = t(refused ? "analyze.refused" : "analyze.failed") + ":";
    $("analyze-error-detail").textContent = message;
    show(box, true);
    show($("upload-section"), true);
  }

  function download(list, href, label) {
    if (!href) { return; }
    var li = el("li"), a = el("a", label);
    a.href = href;
    li.appendChild(a);
    list.appendChild(li);
  }

  function table(headers, rows) {
    var tbl = el("table"), head = el("tr");
    headers.forEach(function (h) { head.appendChild(el("th", h)); });
    tbl.appendChild(head);
    rows.forEach(function (cells) {
      var tr = el("tr");
      cells.forEach(function (c) {
        var td = el("td");
        if (c instanceof Node) { td.appendChild(c); } else { td.textContent = c === null || c === undefined ? "–" : String(c); }
        tr.appendChild(td);
      });
      tbl.appendChild(tr);
    });
    return tbl;
  }

  function badge(outcome) {
    var b = el("span", outcome ? t("outcome." + outcome) : "–", "badge");
    b.setAttribute("data-outcome", outcome || "none");
    return b;
  }

  function thumbnail(image) {
    var img = el("img");
    img.src = image.urls.overlay; img.height = 96; img.alt = image.entry;
    return img;
  }

  // One study of an archive: its own outcome (or why it has none), date, images and report.
  function studyCard(s, n, count, imagesByEntry, list) {
    var card = el("article", null, "study-card outcome-" + (s.outcome || "none"));
    card.setAttribute("data-outcome", s.outcome || "none");
    var summary = s.summary || {};
    var title = [format(t("analyze.study"), { n: n, count: count })];
    var date = summary.study_date_text || summary.study_date;
    if (date) { title.push(date); }
    if (summary.study_description) { title.push(summary.study_description); }
    card.appendChild(el("h4", title.join(" · "), "study-title"));
    var verdict = el("p", null, "verdict");
    verdict.appendChild(badge(s.outcome));
    if (s.outcome) {
      verdict.appendChild(el("span", " " + (s.label_text || "") + " · " + t("analyze.fracture_probability") + " " + percent(s.fracture_probability)));
    } else {
      verdict.appendChild(el("span", " " + t("analyze.not_classified") + (s.reason ? ": " + (s.reason_text || s.reason) : ""), "study-reason"));
    }
    card.appendChild(verdict);
    var facts = [].concat(summary.modalities || [], summary.body_parts || []);
    facts.push(s.images_text || format(t("analyze.study_images"), { classified: s.classified, images: s.images }));
    card.appendChild(el("p", facts.join(" · "), "study-facts"));
    var thumbs = el("div", null, "thumbs");
    (s.entries || []).forEach(function (entry) {
      var image = imagesByEntry[entry];
      if (image && image.urls && image.urls.overlay) { thumbs.appendChild(thumbnail(image)); }
    });
    if (thumbs.firstChild) { card.appendChild(thumbs); }
    if (s.urls && s.urls.sr) {
      var a = el("a", t("analyze.download_sr"));
      a.href = s.urls.sr;
      card.appendChild(a);
      download(list, s.urls.sr, t("analyze.download_sr") + (count > 1 ? " · " + format(t("analyze.study"), { n: n, count: count }) : ""));
    }
    return card;
  }

  function renderSingle(result) {
    var p = result.fracture_probability, q = result.normal_probability;
    $("result-badge").textContent = result.outcome ? t("outcome." + result.outcome) : "–";
    $("result-label").textContent = result.label_text || "";
    $("bar-fracture").style.width = p === undefined ? "0" : (100 * p) + "%";
    $("bar-normal").style.width = q === undefined ? "0" : (100 * q) + "%";
    $("value-fracture").textContent = p === undefined ? "–" : percent(p);
    $("value-normal").textContent = q === undefined ? "–" : percent(q);
    $("result-confidence").textContent = result.confidence === undefined ? "–" : percent(result.confidence);
    var date = result.dicom ? (result.dicom.study_date_text || result.dicom.study_date) : null;
    $("result-study-date").textContent = date || "";
    show($("result-study-date"), !!date); show($("result-study-date-label"), !!date);
    var img = $("overlay-image");
    if (result.urls.overlay) { img.src = result.urls.overlay; show(img.parentNode, true); } else { img.removeAttribute("src"); show(img.parentNode, false); }
  }

  function renderStudies(result, list) {
    var box = $("study-results");
    var imagesByEntry = {};
    result.images.forEach(function (i) { imagesByEntry[i.entry] = i; });
    box.appendChild(el("h3", t("analyze.studies")));
    var count = result.studies.length;
    if (count > 1) { box.appendChild(el("p", format(t("analyze.studies_found"), { count: count }), "studies-found")); }
    result.studies.forEach(function (s, index) {
      box.appendChild(studyCard(s, index + 1, count, imagesByEntry, list));
    });
    box.appendChild(el("h3", t("analyze.images")));
    box.appendChild(table(
      [t("analyze.entry"), t("analyze.state"), t("analyze.fracture_probability"), t("analyze.reason"), ""],
      result.images.map(function (i) {
        return [i.entry, t("state." + i.state), i.fracture_probability === undefined ? null : percent(i.fracture_probability),
                i.reason_text || i.reason, i.urls && i.urls.overlay ? thumbnail(i) : ""];
      })));
  }

  function render(result) {
    progress(null);
    show($("analyze-error"), false);
    show($("upload-section"), false);
    var study = result.type === "study";
    var section = $("result");
    var outcome = study ? "studies" : (result.outcome || "none");
    section.setAttribute("data-outcome", outcome);
    section.className = "result outcome-" + outcome;
    var th = $("result-thresholds");
    th.textContent = format(th.getAttribute("data-template"), {
      low: number(result.thresholds.low, 2), high: number(result.thresholds.high, 2)});
    $("result-model").textContent = (result.model.display_text || result.model.display_name) + " · " + result.model.version;
    $("result-time").textContent = Math.round(result.processing_ms) + " " + t("unit.ms");
    $("result-expires").textContent = result.expires_at ? new Date(result.expires_at).toLocaleString(lang) : "–";

    var list = $("downloads");
    clear(list);
    download(list, result.urls.overlay, t("analyze.download_overlay"));
    download(list, result.urls.sc, t("analyze.download_sc"));
    download(list, result.urls.sr, t("analyze.download_sr"));
    download(list, result.urls.report, t("analyze.download_report"));

    clear($("study-results"));
    show($("single-result"), !study);
    show($("study-results"), study);
    if (study) { renderStudies(result, list); } else { renderSingle(result); }
    show(section, true);
  }

  function upload(file) {
    show($("analyze-error"), false);
    file.slice(0, 4).arrayBuffer().then(function (buffer) {
      var zip = isZip(new Uint8Array(buffer));
      var form = new FormData();
      form.append("file", file);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", (zip ? "/api/analyze-study" : "/api/analyze") + "?lang=" + encodeURIComponent(lang));
      xhr.withCredentials = true;
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) { progress("uploading", e.loaded / e.total); } };
      xhr.upload.onload = function () { progress("processing"); };
      xhr.onerror = function () { fail(t("analyze.network_error")); };
      xhr.onload = function () {
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
        if (xhr.status === 200 && body) { setIdInUrl(body.id); render(body); return; }
        if (xhr.status === 401) { window.location.reload(); return; }
        fail(body && body.detail ? body.detail : "HTTP " + xhr.status, xhr.status >= 400 && xhr.status < 500);
      };
      show($("upload-section"), false);
      progress("uploading", 0);
      xhr.send(form);
    });
  }

  function reset() {
    setIdInUrl(null);
    show($("result"), false);
    show($("analyze-error"), false);
    show($("upload-section"), true);
    $("upload-form").reset();
    choose(null);
  }

  $("file").addEventListener("change", function (e) { choose(e.target.files[0] || null); });
  var zone = $("dropzone");
  ["dragenter", "dragover"].forEach(function (name) {
    zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.add("dragging"); });
  });
  ["dragleave", "drop"].forEach(function (name) {
    zone.addEventListener(name, function (e) { e.preventDefault(); zone.classList.remove("dragging"); });
  });
  zone.addEventListener("drop", function (e) {
    if (e.dataTransfer && e.dataTransfer.files.length) { choose(e.dataTransfer.files[0]); }
  });
  $("upload-form").addEventListener("submit", function (e) {
    e.preventDefault();
    if (chosen) { upload(chosen); }
  });
  $("new-analysis").addEventListener("click", reset);

  var id = new URL(window.location.href).searchParams.get("id");
  if (id) {
    show($("upload-section"), false);
    progress("processing");
    fetch("/api/analyses/" + encodeURIComponent(id) + "?lang=" + encodeURIComponent(lang), { credentials: "same-origin" })
      .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, body: body }; }); })
      .then(function (r) {
        if (r.ok) { setIdInUrl(id); render(r.body); } else { setIdInUrl(null); fail(r.body.detail); }
      })
      .catch(function () { fail(t("analyze.network_error")); });
  }
}());
