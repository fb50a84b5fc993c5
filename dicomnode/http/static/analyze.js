// dicomnode Analyze page: pick or drop a file, upload it with progress, show the result.
// A ZIP (recognised by its first bytes, as the server does) goes to /api/analyze-study.
// The result's id is put into the URL, so a reload or a language switch shows it again.
(function () {
  "use strict";
  var messages = JSON.parse(document.getElementById("messages").textContent);
  var lang = document.body.getAttribute("data-lang") || "en";
  var $ = function (id) { return document.getElementById(id); };
  var chosen = null;

  function t(key) { return messages[key] || key; }
  function percent(p) { return (100 * p).toFixed(1) + " %"; }
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

  function choose(file) {
    chosen = file;
    $("file-name").textContent = file ? file.name + " (" + Math.ceil(file.size / 1024) + " KiB)" : "";
    $("analyze-button").disabled = !file;
    var preview = $("preview"), img = $("preview-image");
    if (!file) { show(preview, false); return; }
    show(preview, true);
    if (/^image\/(png|jpeg|bmp|gif|webp)$/.test(file.type)) {
      img.src = URL.createObjectURL(file);
      show(img, true); show($("preview-none"), false);
    } else {
      img.removeAttribute("src");
      show(img, false); show($("preview-none"), true);
    }
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

  function fail(message) {
    progress(null);
    var box = $("analyze-error");
    box.textContent = t("analyze.failed") + ": " + message;
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

  function render(result) {
    progress(null);
    show($("analyze-error"), false);
    show($("upload-section"), false);
    var headline = result;
    var study = result.type === "study";
    if (study) {
      var reported = result.studies.filter(function (s) { return s.outcome; });
      headline = reported.sort(function (a, b) { return b.fracture_probability - a.fracture_probability; })[0] || {};
    }
    var section = $("result");
    section.setAttribute("data-outcome", headline.outcome || "none");
    section.className = "result outcome-" + (headline.outcome || "none");
    $("result-badge").textContent = headline.outcome ? t("outcome." + headline.outcome) : "–";
    $("result-label").textContent = headline.label_text || "";
    var p = headline.fracture_probability, q = headline.normal_probability;
    $("bar-fracture").style.width = p === undefined ? "0" : (100 * p) + "%";
    $("bar-normal").style.width = q === undefined ? "0" : (100 * q) + "%";
    $("value-fracture").textContent = p === undefined ? "–" : percent(p);
    $("value-normal").textContent = q === undefined ? "–" : percent(q);
    $("result-confidence").textContent = headline.confidence === undefined ? "–" : percent(headline.confidence);
    var th = $("result-thresholds");
    th.textContent = th.getAttribute("data-template")
      .replace("{low}", result.thresholds.low).replace("{high}", result.thresholds.high);
    $("result-model").textContent = (result.model.display_text || result.model.display_name) + " · " + result.model.version;
    $("result-time").textContent = Math.round(result.processing_ms) + " " + t("unit.ms");
    $("result-expires").textContent = result.expires_at ? new Date(result.expires_at).toLocaleString(lang) : "–";

    var overlay = result.urls.overlay;
    if (study) {
      var firstImage = result.images.filter(function (i) { return i.urls && i.urls.overlay; })[0];
      overlay = firstImage ? firstImage.urls.overlay : null;
    }
    var img = $("overlay-image");
    if (overlay) { img.src = overlay; show(img.parentNode, true); } else { img.removeAttribute("src"); show(img.parentNode, false); }

    var list = $("downloads");
    clear(list);
    download(list, result.urls.overlay, t("analyze.download_overlay"));
    download(list, result.urls.sc, t("analyze.download_sc"));
    download(list, result.urls.sr, t("analyze.download_sr"));
    download(list, result.urls.report, t("analyze.download_report"));

    var box = $("study-results");
    clear(box);
    if (study) {
      box.appendChild(el("h3", t("analyze.studies")));
      box.appendChild(table(
        [t("outcome"), t("study_date"), t("description"), t("modality"), t("body_part"), t("images")],
        result.studies.map(function (s) {
          download(list, s.urls.sr, t("analyze.download_sr"));
          var cell = el("span");
          cell.appendChild(badge(s.outcome));
          if (s.fracture_probability !== undefined) { cell.appendChild(el("span", " " + percent(s.fracture_probability))); }
          return [cell, s.summary.study_date, s.summary.study_description,
                  s.summary.modalities.join(", "), s.summary.body_parts.join(", "), s.classified + " / " + s.images];
        })));
      box.appendChild(el("h3", t("analyze.images")));
      box.appendChild(table(
        [t("analyze.entry"), t("analyze.state"), t("analyze.fracture_probability"), t("analyze.reason"), ""],
        result.images.map(function (i) {
          var thumb = "";
          if (i.urls && i.urls.overlay) {
            thumb = el("img"); thumb.src = i.urls.overlay; thumb.height = 96; thumb.alt = i.entry;
          }
          return [i.entry, t("state." + i.state), i.fracture_probability === undefined ? null : percent(i.fracture_probability),
                  i.reason_text || i.reason, thumb];
        })));
    }
    show(section, true);
  }

  function upload(file) {
    show($("analyze-error"), false);
    file.slice(0, 4).arrayBuffer().then(function (buffer) {
      var b = new Uint8Array(buffer);
      var zip = b.length === 4 && b[0] === 0x50 && b[1] === 0x4b && (b[2] === 3 || b[2] === 5);
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
        fail(body && body.detail ? body.detail : "HTTP " + xhr.status);
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
