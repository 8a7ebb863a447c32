// The ipywidgets HTML manager (1.x) typesets widget labels through MathJax 2's queue,
// MathJax.Hub.Queue(["Typeset", MathJax.Hub, element]). The book loads MathJax 3, which has no Hub:
// give the manager a queue that forwards to MathJax 3's typesetPromise once MathJax is ready.
(function () {
  function install() {
    var mj = window.MathJax;
    if (!mj || mj.Hub) {
      return;
    }
    mj.Hub = {
      Queue: function (command) {
        var element = command && command[2];
        var ready = mj.startup && mj.startup.promise ? mj.startup.promise : Promise.resolve();
        ready.then(function () {
          if (element && mj.typesetPromise) {
            return mj.typesetPromise([element]);
          }
        }).catch(function (err) {
          console.warn("widget label not typeset:", err);
        });
      }
    };
  }
  // MathJax is a deferred script: it has replaced its configuration object by DOMContentLoaded
  document.addEventListener("DOMContentLoaded", install);
})();
